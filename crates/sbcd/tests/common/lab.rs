//! The lab's peers as a person starts them: `cargo xtask lab ...` (or any cargo command line)
//! run from the workspace root in a process group of its own, as in a terminal of its own,
//! its output collected line by line; Ctrl-C is SIGINT to that group.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{wait_for, wait_for_seen, PATIENCE};

/// The workspace root (README.md, lab/, xtask/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/sbcd sits two levels below the workspace root")
        .to_path_buf()
}

/// The cargo that runs the tests, else `cargo` from PATH.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Builds xtask once, before a test's clock starts: a person's first `cargo xtask` builds it
/// too, but that may take longer than any step's patience.
pub fn build_xtask() {
    let build = Command::new(cargo())
        .args(["build", "--quiet", "--package", "xtask"])
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build");
    assert!(build.success(), "cargo build -p xtask: {build}");
}

/// A command line running in its own process group (as in its own terminal),
/// its stdout collected line by line; the group is killed when dropped.
pub struct Terminal {
    command: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    /// Set when its stdout reached its end: every line it printed is in `output`.
    ended: Arc<AtomicBool>,
}

impl Terminal {
    pub fn open(command: &str, env: &[(&str, String)]) -> Terminal {
        let words: Vec<&str> = command.split_whitespace().collect();
        let (program, args) = words.split_first().expect("a command has a program");
        assert_eq!(
            *program, "cargo",
            "the walkthrough's commands are cargo tasks: {command}"
        );
        let mut child = Command::new(cargo())
            .args(args)
            .current_dir(workspace_root())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&output);
        let ended = Arc::new(AtomicBool::new(false));
        let at_end = Arc::clone(&ended);
        let label = command.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
            at_end.store(true, Ordering::SeqCst);
        });
        Terminal {
            command: command.to_owned(),
            child,
            output,
            ended,
        }
    }

    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    pub fn wait_output(&mut self, needle: &str) {
        let command = self.command.clone();
        wait_for_seen(
            &format!("`{command}` to print {needle:?}"),
            PATIENCE,
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    let output = self.collected_after_exit();
                    assert!(
                        output.contains(needle),
                        "`{command}` exited ({status}) without printing {needle:?}:\n{output}"
                    );
                }
                let output = self.output();
                if output.contains(needle) {
                    Ok(())
                } else {
                    Err(output)
                }
            },
        )
    }

    /// Waits for the command to end by itself; returns its output, failing unless it exited 0.
    pub fn wait_exit(mut self, bound: Duration) -> String {
        let command = self.command.clone();
        let status = wait_for(&format!("`{command}` to exit"), bound, || {
            self.child.try_wait().ok().flatten()
        });
        let output = self.collected_after_exit();
        assert!(status.success(), "`{command}` exited {status}:\n{output}");
        output
    }

    /// Ctrl-C, as in its terminal: SIGINT to its process group; then waits for it to end.
    pub fn interrupt(self) -> String {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        self.wait_exit(PATIENCE)
    }

    fn collected_after_exit(&mut self) -> String {
        // Its last lines may still be on their way through the pipe.
        wait_for("its output to end", PATIENCE, || {
            self.ended.load(Ordering::SeqCst).then_some(())
        });
        self.output()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
