use super::*;
use crate::{ProbeInfo, TwinInfo};

const NOW: u64 = 1_796_056_828_671;

fn counter(name: &str, value: u64) -> Counter {
    Counter {
        name: name.into(),
        value,
    }
}

fn upstream(uri: &str, status: &str, failures: u64, last_probe: Option<ProbeInfo>) -> UpstreamInfo {
    UpstreamInfo {
        uri: uri.into(),
        priority: 1,
        status: status.into(),
        back_in_secs: None,
        failures,
        last_probe,
    }
}

fn snapshot() -> MetricsSnapshot {
    MetricsSnapshot {
        system_state: Some(SystemStateInfo {
            node: "sbc-a".into(),
            state: SystemState::Draining,
            since_unix_ms: NOW - 5_000,
            guard_remaining_ms: Some(25_500),
            active_sessions: 3,
            registrations: 7,
        }),
        stats: vec![
            counter("sip.received", 100),
            counter("sip.relayed_2xx", 40),
            counter("sip.relayed_4xx", 2),
            counter("sip.drain_rejected", 5),
            counter("sip.cap_rejected", 1),
            counter("sip.cap_rejected_transactions", 0),
            counter("sip.cap_rejected_dialogs", 1),
            counter("sip.cap_rejected_bindings", 0),
            counter("sip.rate_limited", 9),
            counter("sip.malformed_dropped", 4),
            counter("sip.server_transactions", 6),
            counter("sip.shard.0.received", 60),
            counter("sip.shard.1.received", 40),
            counter("sip.some_new_counter", 11),
            counter("sip.active_sessions", 3),
            counter("transport.tcp.refused_per_source", 12),
            counter("transport.sctp.refused_per_source", 1),
            counter("transport.tcp.closed_idle", 2),
            counter("transport.udp.received", 1000),
            counter("transport.tcp.open", 4),
            counter("transport.shard_queue_full", 0),
            counter("state.transitions.online_to_draining", 2),
            counter("state.transitions.draining_to_online", 1),
        ],
        upstreams: vec![
            upstream(
                "sip:127.0.0.1:5070;transport=udp",
                "in-rotation",
                0,
                Some(ProbeInfo {
                    at_unix_ms: NOW - 1_500,
                    code: Some(200),
                }),
            ),
            upstream(
                "sip:core-b.example",
                "late",
                3,
                Some(ProbeInfo {
                    at_unix_ms: NOW,
                    code: None,
                }),
            ),
            upstream("sip:core-c.example", "in-rotation", 0, None),
        ],
        health: Some(HealthInfo {
            uptime_secs: 3600,
            threads: vec![],
            watchdog: Some("/dev/watchdog".into()),
            recoveries: 2,
            last_recovery: None,
        }),
        twin: None,
    }
}

fn lines_of(text: &str, family: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn families_have_help_and_type_and_the_labels_operators_group_by() {
    let text = exposition(&snapshot());
    assert!(
        text.contains(
            "# HELP sbc_sip_answers_total Responses relayed by the box, by class.\n\
             # TYPE sbc_sip_answers_total counter\n\
             sbc_sip_answers_total{class=\"2xx\"} 40\n\
             sbc_sip_answers_total{class=\"4xx\"} 2\n"
        ),
        "{text}"
    );
    assert_eq!(
        lines_of(&text, "sbc_system_state"),
        [
            "sbc_system_state{state=\"online\"} 0",
            "sbc_system_state{state=\"draining\"} 1",
            "sbc_system_state{state=\"offline\"} 0",
        ]
    );
    assert_eq!(lines_of(&text, "sbc_calls_active"), ["sbc_calls_active 3"]);
    assert_eq!(
        lines_of(&text, "sbc_drain_guard_remaining_seconds"),
        ["sbc_drain_guard_remaining_seconds 25.500"]
    );
    assert_eq!(
        lines_of(&text, "sbc_sip_rejected_total"),
        [
            "sbc_sip_rejected_total{reason=\"drain\"} 5",
            "sbc_sip_rejected_total{reason=\"cap\"} 1",
        ]
    );
    assert_eq!(
        lines_of(&text, "sbc_sip_cap_rejected_total"),
        [
            "sbc_sip_cap_rejected_total{cap=\"transactions\"} 0",
            "sbc_sip_cap_rejected_total{cap=\"dialogs\"} 1",
            "sbc_sip_cap_rejected_total{cap=\"bindings\"} 0",
        ]
    );
    assert_eq!(
        lines_of(&text, "sbc_sip_dropped_total"),
        [
            "sbc_sip_dropped_total{reason=\"rate_limited\"} 9",
            "sbc_sip_dropped_total{reason=\"malformed\"} 4",
        ]
    );
    assert_eq!(
        lines_of(&text, "sbc_transport_refused_total"),
        [
            "sbc_transport_refused_total{transport=\"tcp\",reason=\"per_source\"} 12",
            "sbc_transport_refused_total{transport=\"sctp\",reason=\"per_source\"} 1",
        ]
    );
    assert_eq!(
        lines_of(&text, "sbc_transport_closed_total"),
        ["sbc_transport_closed_total{transport=\"tcp\",reason=\"idle\"} 2"]
    );
    assert_eq!(
        lines_of(&text, "sbc_shard_received_total"),
        [
            "sbc_shard_received_total{shard=\"0\"} 60",
            "sbc_shard_received_total{shard=\"1\"} 40",
        ]
    );
    // Gauges keep their names; a counter no rule knows is still exported under its own.
    assert!(
        text.contains("# TYPE sbc_sip_server_transactions gauge\nsbc_sip_server_transactions 6\n")
    );
    assert!(text.contains("# TYPE sbc_transport_connections_open gauge\n"));
    assert!(text.contains(
        "# TYPE sbc_sip_some_new_counter_total counter\nsbc_sip_some_new_counter_total 11\n"
    ));
    assert!(text.contains("sbc_transport_shard_queue_full_total 0\n"));
    assert_eq!(
        lines_of(&text, "sbc_system_state_transitions_total"),
        [
            "sbc_system_state_transitions_total{from=\"online\",to=\"draining\"} 2",
            "sbc_system_state_transitions_total{from=\"draining\",to=\"online\"} 1",
        ]
    );
    assert_eq!(
        lines_of(&text, "sbc_watchdog_recoveries_total"),
        ["sbc_watchdog_recoveries_total 2"]
    );
    assert_eq!(
        lines_of(&text, "sbc_upstream_up"),
        [
            "sbc_upstream_up{upstream=\"sip:127.0.0.1:5070;transport=udp\"} 1",
            "sbc_upstream_up{upstream=\"sip:core-b.example\"} 0",
            "sbc_upstream_up{upstream=\"sip:core-c.example\"} 1",
        ]
    );
    assert_eq!(
        lines_of(&text, "sbc_upstream_last_probe_status_code"),
        [
            "sbc_upstream_last_probe_status_code{upstream=\"sip:127.0.0.1:5070;transport=udp\"} 200",
            "sbc_upstream_last_probe_status_code{upstream=\"sip:core-b.example\"} 0",
        ]
    );
    assert!(text.contains(
        "sbc_upstream_last_probe_timestamp_seconds{upstream=\"sip:127.0.0.1:5070;transport=udp\"} 1796056827.171\n"
    ));
}

#[test]
fn every_family_is_declared_once_before_its_samples_and_counters_end_in_total() {
    let text = exposition(&snapshot());
    let mut declared: Vec<String> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(!declared.contains(&name), "{name} declared twice");
            declared.push(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(Some(name), declared.last().map(String::as_str));
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            current = Some((name.to_owned(), kind.to_owned()));
        } else {
            let (name, _) = current.as_ref().expect("a sample after its TYPE");
            let sample_name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(sample_name, name, "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    let mut sorted = declared.clone();
    sorted.sort();
    assert_eq!(declared, sorted, "families in name order");
}

#[test]
fn the_same_snapshot_gives_the_same_text_whatever_the_order_of_the_counters() {
    let a = snapshot();
    let mut b = snapshot();
    // Counters of different families in another order: the families stay in name order.
    b.stats.reverse();
    let (ta, tb) = (exposition(&a), exposition(&b));
    let families = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(families(&ta), families(&tb));
    assert_eq!(exposition(&a), ta, "deterministic");
}

#[test]
fn label_values_are_escaped_and_control_characters_cannot_reach_a_terminal() {
    let snap = MetricsSnapshot {
        upstreams: vec![upstream(
            "sip:a\"b\\c\nd\u{1b}[2J\u{202e}",
            "in-rotation",
            0,
            None,
        )],
        ..MetricsSnapshot::default()
    };
    let text = exposition(&snap);
    assert!(
        text.contains("sbc_upstream_up{upstream=\"sip:a\\\"b\\\\c\\nd\u{fffd}[2J\u{fffd}\"} 1\n"),
        "{text}"
    );
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    assert_eq!(label_value("plain ☎"), "plain ☎");
    assert_eq!(help_text("a\\b\nc"), "a\\\\b\\nc");
    assert_eq!(metric_name("sip.shard-1"), "sip_shard_1");
    assert_eq!(metric_name("1x"), "_1x");
}

#[test]
fn a_box_without_a_twin_or_engine_still_answers() {
    assert_eq!(exposition(&MetricsSnapshot::default()), "");
    let only_health = MetricsSnapshot {
        health: snapshot().health,
        ..MetricsSnapshot::default()
    };
    let text = exposition(&only_health);
    assert!(text.contains("sbc_uptime_seconds 3600\n"), "{text}");
}

#[test]
fn the_twin_exports_keep_alives_per_path_and_replication_lag() {
    let path = |path, up, sent, received, forged| twin::PathStatus {
        path,
        up,
        last_heard_ms: Some(20),
        misses: 0,
        counters: twin::PathCounters {
            sent,
            received,
            forged,
            ..twin::PathCounters::default()
        },
    };
    let status = twin::Status {
        node_id: 1,
        role: twin::Role::Active,
        phase: twin::Phase::Active,
        standing_down: false,
        state: twin::PeerState::Online,
        term: 4,
        epoch: 9,
        owns_addresses: true,
        twin: None,
        paths: vec![
            path(twin::PathId::Link, true, 100, 98, 0),
            path(twin::PathId::Second, false, 100, 50, 3),
        ],
        totals: twin::PathCounters::default(),
        queries: twin::QueryCounters::default(),
        last_takeover: None,
    };
    let replication = replica::View {
        mode: replica::Mode::Hot,
        sync: replica::Sync::Synced,
        position: 10,
        sent_seq: 10,
        acked_seq: 8,
        received_seq: 0,
        lag_records: 2,
        lag_ms: Some(35),
        records_applied: 0,
        stale_dropped: 0,
        rejected: 0,
        last_rejected: None,
        snapshots_sent: 1,
        snapshots_received: 0,
        last_snapshot: None,
        last_close: None,
        switchover_waiting_for: None,
    };
    let snap = MetricsSnapshot {
        twin: Some(TwinInfo {
            status,
            replication: Some(replication),
        }),
        ..MetricsSnapshot::default()
    };
    let text = exposition(&snap);
    assert_eq!(
        lines_of(&text, "sbc_twin_keepalives_sent_total"),
        [
            "sbc_twin_keepalives_sent_total{path=\"link\"} 100",
            "sbc_twin_keepalives_sent_total{path=\"second\"} 100",
        ]
    );
    assert!(
        text.contains("sbc_twin_keepalives_dropped_total{path=\"second\",reason=\"forged\"} 3\n")
    );
    assert_eq!(
        lines_of(&text, "sbc_twin_path_up"),
        [
            "sbc_twin_path_up{path=\"link\"} 1",
            "sbc_twin_path_up{path=\"second\"} 0",
        ]
    );
    assert!(text.contains("sbc_twin_role{role=\"active\"} 1\n"));
    assert!(text.contains("sbc_twin_replication_lag_records 2\n"));
    assert!(text.contains("sbc_twin_replication_lag_seconds 0.035\n"));
    assert!(text.contains("sbc_twin_replication_synced 1\n"));
}
