//! Kamailio 5.6 (Debian's `kamailio`) as an authenticating core registrar: `registrar` +
//! `usrloc` in memory, digest authentication on REGISTER by `auth` + `auth_db` over `db_text`
//! (`tests/kamailio/registrar.cfg`). One subscriber, `phone` / `phone-secret` (the credentials
//! the `register_auth*.xml` scenarios answer challenges with).
//!
//! What the registrar holds is read with `kamcmd ul.lookup` over its ctl socket, so a test sees
//! a de-registration take effect where it matters: at the core. Its `registrar:` log lines
//! (one per REGISTER: CSeq, Expires, Contact, and whether it was challenged or saved) are kept
//! for the test output.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::daemon::signal;
use super::net::{free_port, udp_port_taken};
use super::{wait_for, PATIENCE};

/// The one subscriber of the registrar.
pub const USER: &str = "phone";
const PASSWORD: &str = "phone-secret";

/// A running Kamailio; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Kamailio {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/registrar.cfg")
}

impl Kamailio {
    /// Starts Kamailio on a fresh port of 127.0.0.1, relaying calls to `softswitch_port`, and
    /// returns once it listens and its ctl socket answers. Nonces are accepted again while
    /// valid (300 s), as Kamailio does by default.
    pub fn start(softswitch_port: u16) -> Kamailio {
        Kamailio::start_with(softswitch_port, &[])
    }

    /// As [`Kamailio::start`], with the config's optional defines: `ONE_TIME_NONCE` (each
    /// nonce accepted once only), `NONCE_EXPIRE=N` (nonce lifetime in seconds).
    pub fn start_with(softswitch_port: u16, defines: &[&str]) -> Kamailio {
        let mut all = vec![format!("SOFTSWITCH=\"sip:127.0.0.1:{softswitch_port}\"")];
        all.extend(defines.iter().map(|d| (*d).to_owned()));
        Kamailio::start_config(&config(), &all)
    }

    /// Kamailio on one of the lab's configurations (`lab/kamailio/NAME.cfg`: `dispatcher`,
    /// `registrar`), with `-A` defines besides the db_text directory (`DBURL`, holding the
    /// subscriber `phone` / `phone-secret`) and kamcmd's socket (`CTL`), which every one gets.
    pub fn start_lab(name: &str, defines: &[String]) -> Kamailio {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let config = root.join("../../lab/kamailio").join(format!("{name}.cfg"));
        Kamailio::start_config(&config, defines)
    }

    fn start_config(config: &std::path::Path, defines: &[String]) -> Kamailio {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).expect("create the db_text directory");
        // db_text tables: a header line of typed columns, then rows; auth_db checks the
        // subscriber table's version (7 in 5.6). ha1 columns may not be empty; calculate_ha1
        // makes them unused.
        std::fs::write(
            db.join("version"),
            "id(int,auto) table_name(string) table_version(int) \n0:subscriber:7\n",
        )
        .expect("write the version table");
        std::fs::write(
            db.join("subscriber"),
            format!(
                "id(int,auto) username(string) domain(string) password(string) ha1(string) \
                 ha1b(string) \n1:{USER}:127.0.0.1:{PASSWORD}:-:-\n"
            ),
        )
        .expect("write the subscriber table");
        let port = free_port();
        let ctl = dir.path().join("ctl.sock");
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("create the log");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(config)
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .args(["-l", &format!("udp:127.0.0.1:{port}")])
            .args(["-A", &format!("DBURL=\"text://{}\"", db.display())])
            .args(["-A", &format!("CTL=\"unixs:{}\"", ctl.display())])
            .args(defines.iter().flat_map(|d| ["-A", d.as_str()]))
            .arg("-Y")
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run kamailio ({e}); install the Debian package kamailio (cargo xtask test does)")
            });
        let mut kamailio = Kamailio {
            port,
            dir,
            child: Some(child),
        };
        wait_for("kamailio to listen and answer kamcmd", PATIENCE, || {
            if let Some(Ok(Some(status))) = kamailio.child.as_mut().map(Child::try_wait) {
                panic!("kamailio exited at start: {status}\n{}", kamailio.log());
            }
            (udp_port_taken(port) && ctl.exists() && kamailio.kamcmd(&["core.version"]).is_ok())
                .then_some(())
        });
        kamailio
    }

    /// Where it listens (UDP on 127.0.0.1): sbcd's upstream.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its temporary directory (for files a configuration reads, such as a dispatcher list).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The flags `dispatcher.list` shows for destination `uri` (`AP`: active and probed, `IP`:
    /// inactive and probed, ...), if it lists it.
    pub fn dispatcher_flags(&self, uri: &str) -> Option<String> {
        let text = self.kamcmd(&["dispatcher.list"]).ok()?;
        let mut lines = text.lines().map(str::trim);
        lines.find(|l| l.strip_prefix("URI: ") == Some(uri))?;
        lines
            .find_map(|l| l.strip_prefix("FLAGS: "))
            .map(str::to_owned)
    }

    fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!(
                "unixs:{}",
                self.dir.path().join("ctl.sock").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run kamcmd: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && !text.starts_with("ERROR") {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// The contact addresses the registrar holds for AoR `user` (empty when it has none).
    pub fn contacts(&self, user: &str) -> Vec<String> {
        let text = match self.kamcmd(&["ul.lookup", "location", user]) {
            Ok(text) => text,
            Err(e) => panic!("kamcmd ul.lookup location {user}: {e}"),
        };
        // kamcmd prints "error: 404 - AOR not found in location table" (exit 0) for none.
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("Address: "))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the registrar's contacts for `user` satisfy `check`; returns them.
    pub fn wait_contacts(
        &self,
        user: &str,
        what: &str,
        check: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        wait_for(what, PATIENCE, || {
            let contacts = self.contacts(user);
            check(&contacts).then_some(contacts)
        })
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// The `registrar:` lines of its log (one per REGISTER it handled), without the prefix.
    pub fn registrar_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("registrar: ").map(|(_, rest)| rest.to_owned()))
            .collect()
    }

    /// Waits for a `registrar:` line containing every one of `needles`; returns it.
    pub fn wait_registrar_line(&self, needles: &[&str]) -> String {
        wait_for(
            &format!("kamailio to log a REGISTER with {needles:?}"),
            PATIENCE,
            || {
                self.registrar_lines()
                    .into_iter()
                    .find(|l| needles.iter().all(|n| l.contains(n)))
            },
        )
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets the main process stop its children; SIGKILL would orphan them.
        signal(child.id(), "TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
