//! The engine's `show` answers against the walks over every table they replaced.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::dialogs::{Dialog, DialogId, DialogState, Party};
use crate::events::RegistrationInfo;
use crate::msg::aor_of;
use crate::registrations::Binding;
use crate::transport::{Flow, FlowId, ListenerId, Realm, Transport};

use super::Proxy;

/// `is_endpoint` as it was.
fn old_is_endpoint(p: &Party, contact: &str, aor: &str, from: Flow, single: bool) -> bool {
    p.contact
        .as_deref()
        .is_some_and(|c| crate::dialogs::same_contact(c, contact))
        || (single && (aor_of(&p.uri) == aor || p.flow.remote == from.remote))
}

/// `show registrations` as it was: every binding against every dialog.
fn old_registrations(proxy: &Proxy) -> Vec<RegistrationInfo> {
    let mut per_aor: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for b in proxy.registrations.iter() {
        *per_aor.entry(b.aor.as_str()).or_default() += 1;
    }
    let mut list: Vec<RegistrationInfo> = proxy
        .registrations
        .iter()
        .map(|b| {
            let single = per_aor.get(b.aor.as_str()) == Some(&1);
            RegistrationInfo {
                active_calls: proxy
                    .dialogs
                    .count_access(|p| old_is_endpoint(p, &b.contact, &b.aor, b.flow, single))
                    as u64,
                aor: b.aor.clone(),
                contact: b.contact.clone(),
                remote: b.flow.remote,
                transport: b.flow.transport,
                expires_in_secs: b.expires_at.saturating_duration_since(proxy.now).as_secs(),
            }
        })
        .collect();
    list.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
    list
}

fn flow(remote: u64, connection: Option<u64>) -> Flow {
    Flow {
        listener: ListenerId(0),
        transport: Transport::Tcp,
        flow: connection.map(FlowId),
        remote: format!("192.0.2.{remote}:5060").parse().unwrap(),
    }
}

#[test]
fn show_registrations_counts_the_calls_the_walk_over_every_dialog_counted() {
    let t0 = Instant::now();
    let mut proxy = Proxy::new(Config::default(), t0);
    let mut x: u64 = 0x853c_49e6_748f_ea9b;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    // Bindings: AoRs with one contact and AoRs with several, contacts written as phones write
    // them (upper-case hosts, explicit default ports), some phones sharing an address.
    for i in 0..300u64 {
        let aor = format!("u{}@h", next(120));
        let contact = match next(3) {
            0 => format!("sip:c{i}@H:5060"),
            _ => format!("sip:c{i}@h"),
        };
        let binding = Binding {
            aor: aor.clone(),
            contact,
            expires_at: t0 + Duration::from_secs(60 + next(3600)),
            flow: flow(next(60), Some(next(40))),
            call_id: format!("r{i}"),
            cseq: 1,
            to_uri: format!("sip:{aor}"),
            registrar_uri: "sip:h".to_owned(),
            credentials: Vec::new(),
        };
        let _ = proxy.registrations.upsert(binding, t0);
    }
    // Calls between phones, and from phones to the core, some ended in place, some moved.
    let party = |next: &mut dyn FnMut(u64) -> u64| Party {
        realm: if next(4) == 0 {
            Realm::Core
        } else {
            Realm::Access
        },
        flow: flow(next(80), (next(2) == 0).then(|| next(40))),
        uri: format!("sip:u{}@H", next(150)).into(),
        tag: None,
        contact: (next(3) > 0).then(|| format!("sip:c{}@h", next(400)).into()),
        cseq: 1,
        route: Vec::new(),
    };
    for i in 0..400u64 {
        let id = DialogId {
            call_id: format!("call{i}").into(),
            caller_tag: "t".into(),
            caller_realm: Realm::Access,
        };
        let dialog = Dialog {
            id: id.clone(),
            state: DialogState::Early,
            caller: party(&mut next),
            callee: party(&mut next),
            priority: false,
        };
        let _ = proxy.dialogs.insert(dialog, t0);
        match next(4) {
            0 => {
                let _ = proxy
                    .dialogs
                    .update(&id, t0, |d| d.state = DialogState::Confirmed);
            }
            1 => {
                let _ = proxy
                    .dialogs
                    .update(&id, t0, |d| d.state = DialogState::Ended);
            }
            2 => {
                let callee = party(&mut next);
                let _ = proxy.dialogs.update(&id, t0, |d| {
                    d.state = DialogState::Confirmed;
                    d.callee.contact = callee.contact;
                });
            }
            _ => {}
        }
    }
    let old = old_registrations(&proxy);
    assert_eq!(proxy.registrations(), old);
    let with_calls = old.iter().filter(|r| r.active_calls > 0).count();
    let with_several = old.iter().filter(|r| r.active_calls > 1).count();
    assert!(
        with_calls > 50 && with_several > 5,
        "too few calls to compare: {with_calls} bindings with calls, {with_several} with several"
    );

    // Closing connections moves parties off them, which the index must follow.
    for connection in 0..20 {
        proxy.handle_flow_closed(t0, ListenerId(0), FlowId(connection));
    }
    assert!(proxy
        .registrations
        .iter()
        .all(|b| b.flow.flow.is_none_or(|f| f.0 >= 20)));
    assert!(proxy.dialogs.iter().all(|(d, _)| [&d.caller, &d.callee]
        .into_iter()
        .all(|p| p.flow.flow.is_none_or(|f| f.0 >= 20))));
    assert_eq!(proxy.registrations(), old_registrations(&proxy));
}

#[test]
fn a_burst_of_transactions_gives_its_room_back_once_they_end() {
    let mut net = crate::tests::harness::Net::standard();
    let phone = "192.168.1.10:5060";
    net.add_phone(phone);
    net.register(phone, "burst", 3600);
    // 3000 calls ringing at once: their transactions live until timer C ends them.
    net.peer("10.1.0.10:5060").invite = crate::tests::harness::CoreInvite::Ring;
    // From 3000 phones: one source would meet its request budget.
    for i in 0..3000 {
        let caller = format!("192.168.{}.{}:5060", 2 + i / 200, 1 + i % 200);
        net.add_phone(&caller);
        net.call_out(&caller, &format!("burst-{i}"));
    }
    let grown = net.proxy.servers.capacity();
    assert!(grown >= 3000, "the burst's transactions are alive: {grown}");
    net.advance(Duration::from_secs(400));
    assert!(
        net.proxy.servers.len() + net.proxy.clients.len() < 10,
        "the burst is over: {} server and {} client transactions left",
        net.proxy.servers.len(),
        net.proxy.clients.len()
    );
    for (table, room) in [
        ("servers", net.proxy.servers.capacity()),
        ("server index", net.proxy.server_index.capacity()),
        ("clients", net.proxy.clients.capacity()),
        ("client index", net.proxy.client_index.capacity()),
    ] {
        // Shrunk to room for 1024 (what hashbrown rounds that to), not left at the burst's.
        assert!(
            room <= 2048,
            "{table} kept room for {room} (grew to {grown})"
        );
    }
    assert_eq!(
        net.proxy.stats().cancelled_unanswered,
        3000,
        "timer C CANCELled each INVITE, the core never answered 487: given up 64*T1 later"
    );
    assert_eq!(net.proxy.counts().registrations, 1, "the binding stays");
}

#[test]
fn fnv_hashes_as_the_byte_chain_did() {
    // The definition it had: every part's bytes then 0xff, one byte a step.
    fn by_chain(parts: &[&str]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            for b in part.bytes().chain(std::iter::once(0xff)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
    let samples: [&[&str]; 6] = [
        &[],
        &[""],
        &["", ""],
        &[
            "0",
            "sip:+15550001@example.com",
            "caller1",
            "",
            "call-1",
            "1",
        ],
        &["abc", "defgh", "\u{e9}t\u{e9}", "1234567"],
        &["sbc-a"],
    ];
    for parts in samples {
        let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        assert_eq!(super::fnv(&bytes), by_chain(parts), "{parts:?}");
    }
}

#[test]
fn is_own_compares_ipv4_text_as_parsing_it_did() {
    use crate::config::ListenerConfig;
    let listener = |addr: &str| ListenerConfig {
        realm: Realm::Access,
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
    };
    let config = Config {
        listeners: vec![
            listener("10.0.0.1:5060"),
            listener("10.1.0.1:5070"),
            listener("[2001:db8::1]:5060"),
            listener("0.0.0.0:5080"),
        ],
        local_names: vec!["sbc.example.com".into()],
        ..Config::default()
    };
    let proxy = Proxy::new(config, Instant::now());
    // What `is_own` did for every host: parse it as an address, compare with each listener.
    let by_parsing = |u: &sip::Uri<'_>| {
        let Some(host) = u.host() else {
            return false;
        };
        if proxy
            .config
            .local_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(host.as_str()))
        {
            return true;
        }
        let Some(ip) = host.ip() else {
            return false;
        };
        let port = u.port().unwrap_or(5060);
        proxy
            .config
            .listeners
            .iter()
            .any(|l| l.addr.ip() == ip && l.addr.port() == port)
    };
    for text in [
        "sip:10.0.0.1",
        "sip:10.0.0.1:5060",
        "sip:10.0.0.1:5061",
        "sip:x@10.0.0.1;lr",
        "sip:010.0.0.1",
        "sip:10.0.0.01:5060",
        "sip:10.0.0.1.5",
        "sip:10.1.0.1:5070;lr;sbc=abc",
        "sip:10.1.0.1",
        "sip:0.0.0.0:5080",
        "sip:0.0.0.00:5080",
        "sip:[2001:db8::1]",
        "sip:[2001:DB8:0::1]:5060",
        "sip:sbc.example.com",
        "sip:SBC.example.com:5999",
        "sip:other.example.com",
        "sip:999.0.0.1",
        "tel:+15550001",
    ] {
        let uri = sip::Uri::parse(text).unwrap();
        assert_eq!(proxy.is_own(&uri), by_parsing(&uri), "{text}");
    }
}
