//! The drain's de-registrations against a real authenticating registrar (SPEC §2 rules 5, 6,
//! 11): Kamailio 5.6 with `registrar` + `auth_db`, which challenges every REGISTER, behind
//! sbcd; SIPp phones answer the challenge with their credentials. Each rule must take effect
//! where it matters, in Kamailio's location table (`kamcmd ul.lookup`), and sbcd must count and
//! log what Kamailio answered to the requests it sent itself.

mod common;

use common::daemon::{Sbcd, SbcdConfig};
use common::kamailio::{Kamailio, USER};
use common::net::{free_port, local, request, UdpPeer};
use common::sipp::{Sipp, SippRun};
use common::{wait_for, PATIENCE};
use control::SystemState;

const RETRY_AFTER_SECS: u64 = 30;

/// Kamailio as the only upstream (and registrar) of sbcd; calls go on to `softswitch_port`.
fn sbcd_with_registrar(softswitch_port: u16) -> (Sbcd, Kamailio) {
    sbcd_with(Kamailio::start(softswitch_port))
}

fn sbcd_with(kamailio: Kamailio) -> (Sbcd, Kamailio) {
    let mut config = SbcdConfig::with_upstreams(&[kamailio.port()]);
    config.retry_after_secs = RETRY_AFTER_SECS;
    config.guard_secs = 60;
    (Sbcd::start(config), kamailio)
}

/// A phone registering through sbcd with digest authentication; its Call-ID is `call_id`.
fn authenticated_phone(sbcd: &Sbcd, scenario: &str, port: u16, call_id: &str) -> Sipp {
    Sipp::uac(scenario, sbcd.access())
        .on_port(port)
        .service(USER)
        .key("expires", "600")
        .arg("-cid_str")
        .arg(call_id)
        .calls(1)
}

/// Tells a phone waiting in its scenario to go on: an OPTIONS in its Call-ID, sent straight to
/// it (not through sbcd).
fn nudge(phone: &SippRun, call_id: &str) {
    let peer = UdpPeer::bind();
    let uri = format!("sip:{USER}@127.0.0.1:{}", phone.port());
    peer.send(
        local(phone.port()),
        request("OPTIONS", &uri, peer.port(), call_id).as_bytes(),
    );
    phone.wait_logged("nudged", |_| true);
}

/// Waits until counter `name` of sbcd reaches `n`.
fn wait_stat(sbcd: &Sbcd, name: &str, n: u64) {
    wait_for(&format!("{name} = {n}"), PATIENCE, || {
        (sbcd.stat(name) == n).then_some(())
    });
}

#[test]
fn rule_5_a_refused_refresh_deregisters_the_phone_at_an_authenticating_registrar() {
    let (sbcd, kamailio) = sbcd_with_registrar(free_port());
    let events = sbcd.watch();
    let port = free_port();
    let call_id = format!("rule5-{port}");
    let phone =
        authenticated_phone(&sbcd, "register_auth_refresh_rejected.xml", port, &call_id).start();
    phone.wait_logged("registered", |_| true);
    let before = kamailio.wait_contacts(USER, "the phone at the registrar", |c| c.len() == 1);
    assert_eq!(sbcd.registrations().len(), 1);

    sbcd.drain(None);
    nudge(&phone, &call_id);
    let phone = phone.wait();

    phone.assert_all_succeeded(1);
    assert_eq!(
        phone.logged("retry-after"),
        vec![RETRY_AFTER_SECS.to_string()]
    );
    kamailio.wait_contacts(
        USER,
        "the registrar to drop the phone",
        <[String]>::is_empty,
    );
    let line = kamailio.wait_registrar_line(&["cseq 3", "expires 0", "saved"]);
    eprintln!("REGISTRAR: had {before:?}; then {line}");
    wait_stat(&sbcd, "sip.own_final_2xx", 1);
    assert_eq!(sbcd.stat("sip.own_challenged"), 0);
    sbcd.wait_log("own request accepted", PATIENCE);
    let (_, reason, _) = events.wait_change_to(SystemState::Offline, PATIENCE);
    assert_eq!(reason, "drained");
}

#[test]
fn rule_5_without_the_phones_credentials_the_challenge_is_logged_and_counted() {
    let (sbcd, kamailio) = sbcd_with_registrar(free_port());
    let port = free_port();
    authenticated_phone(
        &sbcd,
        "register_auth.xml",
        port,
        &format!("rule5-open-{port}"),
    )
    .run()
    .assert_all_succeeded(1);
    kamailio.wait_contacts(USER, "the phone at the registrar", |c| c.len() == 1);

    sbcd.drain(None);
    // A refresh without credentials (a new Call-ID): refused by sbcd, and the removal sbcd
    // sends on from it has nothing Kamailio accepts.
    Sipp::uac("register_rejected.xml", sbcd.access())
        .on_port(port)
        .service(USER)
        .key("expires", "600")
        .calls(1)
        .run()
        .assert_all_succeeded(1);

    wait_stat(&sbcd, "sip.own_challenged", 1);
    assert_eq!(sbcd.stat("sip.own_final_4xx"), 1);
    assert_eq!(sbcd.stat("sip.own_final_2xx"), 0);
    sbcd.wait_log("own request challenged", PATIENCE);
    let line = kamailio.wait_registrar_line(&["expires 0", "challenged"]);
    eprintln!("REGISTRAR: {line}");
    assert_eq!(
        kamailio.contacts(USER).len(),
        1,
        "the phone is still registered at the core (until its expiry)"
    );
}

#[test]
fn rule_6_the_contact_without_a_call_leaves_the_registrar() {
    let softswitch = Sipp::uas("uas_answer.xml").start();
    let (sbcd, kamailio) = sbcd_with_registrar(softswitch.port());
    let in_call = free_port();
    let idle = free_port();
    let port = free_port();
    let call_id = format!("rule6-{port}");
    let contacts = format!(
        "<sip:{USER}@127.0.0.1:{in_call};transport=UDP>, <sip:{USER}@127.0.0.1:{idle};transport=UDP>"
    );
    let phone = authenticated_phone(
        &sbcd,
        "register_auth_contacts_refreshed.xml",
        port,
        &call_id,
    )
    .key("contacts", &contacts)
    .start();
    phone.wait_logged("registered", |_| true);
    kamailio.wait_contacts(USER, "both contacts at the registrar", |c| c.len() == 2);
    let call = Sipp::uac("uac_call.xml", sbcd.access())
        .on_port(in_call)
        .service("core-user")
        .key("caller", USER)
        .calls(1)
        .hold_ms(2000)
        .start();
    wait_for("the call to be up", PATIENCE, || {
        (sbcd.system_state().active_sessions == 1).then_some(())
    });

    sbcd.drain(None);
    nudge(&phone, &call_id);
    let phone = phone.wait();

    phone.assert_all_succeeded(1);
    let left = kamailio.wait_contacts(USER, "only the contact in a call left", |c| c.len() == 1);
    eprintln!(
        "REGISTRAR: {left:?} left; {}; phone told {:?}",
        kamailio.wait_registrar_line(&["cseq 3", "saved"]),
        phone.logged("refreshed")
    );
    assert!(left[0].contains(&format!(":{in_call}")), "{left:?}");
    let regs = sbcd.registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert!(regs[0].expires_in_secs <= RETRY_AFTER_SECS, "{regs:?}");
    call.wait().assert_all_succeeded(1);
    softswitch.stop().assert_none_failed();
}

#[test]
fn rule_11_guard_expiry_deregisters_at_the_registrar_with_the_phones_last_credentials() {
    let (sbcd, kamailio) = sbcd_with_registrar(free_port());
    let events = sbcd.watch();
    let port = free_port();
    authenticated_phone(&sbcd, "register_auth.xml", port, &format!("rule11-{port}"))
        .run()
        .assert_all_succeeded(1);
    kamailio.wait_contacts(USER, "the phone at the registrar", |c| c.len() == 1);

    sbcd.drain(Some(1));
    let (_, reason, _) = events.wait_change_to(SystemState::Offline, PATIENCE);

    assert_eq!(reason, "guard-expired");
    kamailio.wait_contacts(
        USER,
        "the registrar to drop the phone",
        <[String]>::is_empty,
    );
    let line = kamailio.wait_registrar_line(&["cseq 3", "expires 0", "saved"]);
    eprintln!("REGISTRAR: {line}");
    wait_stat(&sbcd, "sip.own_final_2xx", 1);
    assert_eq!(sbcd.stat("sip.own_challenged"), 0);
}

#[test]
fn rule_11_a_registrar_without_nonce_reuse_refuses_the_replayed_credentials_and_sbcd_says_so() {
    let (sbcd, kamailio) = sbcd_with(Kamailio::start_with(free_port(), &["ONE_TIME_NONCE"]));
    let events = sbcd.watch();
    let port = free_port();
    authenticated_phone(
        &sbcd,
        "register_auth.xml",
        port,
        &format!("rule11-once-{port}"),
    )
    .run()
    .assert_all_succeeded(1);
    kamailio.wait_contacts(USER, "the phone at the registrar", |c| c.len() == 1);

    sbcd.drain(Some(1));
    events.wait_change_to(SystemState::Offline, PATIENCE);

    wait_stat(&sbcd, "sip.own_challenged", 1);
    let line = kamailio.wait_registrar_line(&["cseq 3", "expires 0", "challenged"]);
    eprintln!("REGISTRAR (one-time nonce): {line}");
    sbcd.wait_log("own request challenged", PATIENCE);
    assert_eq!(
        kamailio.contacts(USER).len(),
        1,
        "the phone stays registered at the core until its expiry"
    );
}

#[test]
fn rule_11_credentials_older_than_the_nonce_lifetime_are_refused_as_stale() {
    // Kamailio reuses a nonce only while it is valid (300 s by default; 1 s here): the
    // guard's REGISTER replays the credentials of the phone's last REGISTER, which by then may
    // be older than that.
    let (sbcd, kamailio) = sbcd_with(Kamailio::start_with(free_port(), &["NONCE_EXPIRE=1"]));
    let events = sbcd.watch();
    let port = free_port();
    authenticated_phone(
        &sbcd,
        "register_auth.xml",
        port,
        &format!("rule11-stale-{port}"),
    )
    .run()
    .assert_all_succeeded(1);
    kamailio.wait_contacts(USER, "the phone at the registrar", |c| c.len() == 1);

    sbcd.drain(Some(2));
    events.wait_change_to(SystemState::Offline, PATIENCE);

    wait_stat(&sbcd, "sip.own_challenged", 1);
    let line = kamailio.wait_registrar_line(&["cseq 3", "expires 0", "challenged"]);
    eprintln!("REGISTRAR (nonce lifetime 1 s, guard 2 s): {line}");
    assert_eq!(
        kamailio.contacts(USER).len(),
        1,
        "still registered at the core"
    );
}
