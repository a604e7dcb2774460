//! DEBUG PANIC and DEBUG SEGFAULT crash the server on purpose, only where
//! `enable-debug-command` allows it, and a crash leaves Redis' bug report in the log: a
//! panic's message, and the fatal signal with a stack trace. A panic that reaches an event
//! loop stops the whole process (a loop that died alone left its clients unanswered while
//! the others answered PING).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

const CARMINE: &str = env!("CARGO_BIN_EXE_carmine-server");

/// A server process on `port` logging to `dir/log`; killed when dropped.
struct Crashable {
    child: Child,
}

impl Drop for Crashable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Crashable {
    let log = dir.join("log");
    let child = Command::new(CARMINE)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--dir", &dir.display().to_string()])
        .args(["--logfile", &log.display().to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn carmine-server");
    assert!(common::wait_port(port, 10), "the server listens");
    Crashable { child }
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(5)))
        .expect("connects")
}

/// How the process ended, waiting at most 20 s.
fn exit_status(server: &mut Crashable) -> ExitStatus {
    let mut status = None;
    common::wait_until(20, || {
        status = server.child.try_wait().ok().flatten();
        status.is_some()
    });
    status.expect("the server stopped")
}

#[test]
fn crashing_on_request_is_refused_unless_enabled() {
    let dir = common::scratch_dir();
    let port = common::free_port();
    let _server = spawn(&dir, port, &[]);
    let mut c = connect(port);
    for sub in ["PANIC", "SEGFAULT"] {
        let e = redis::cmd("DEBUG")
            .arg(sub)
            .query::<String>(&mut c)
            .expect_err("refused by default");
        assert!(
            e.to_string().contains("DEBUG command not allowed"),
            "DEBUG {sub}: {e}"
        );
    }
    let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn debug_panic_stops_the_server_with_a_bug_report() {
    let dir = common::scratch_dir();
    let port = common::free_port();
    let mut server = spawn(&dir, port, &["--enable-debug-command", "yes"]);
    let mut c = connect(port);
    let _ = redis::cmd("DEBUG").arg("PANIC").query::<String>(&mut c);
    let status = exit_status(&mut server);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let log = std::fs::read_to_string(dir.join("log")).expect("the log");
    for expected in [
        "Guru Meditation: DEBUG PANIC called at Unix time",
        "stopped by a panic",
        "crashed by signal: 6 (SIGABRT)",
        "------ STACK TRACE ------",
        "=== CARMINE BUG REPORT END",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }
}

#[test]
fn debug_segfault_from_a_local_client_stops_the_server_with_a_bug_report() {
    let dir = common::scratch_dir();
    let port = common::free_port();
    let mut server = spawn(&dir, port, &["--enable-debug-command", "local"]);
    let mut c = connect(port);
    let _ = redis::cmd("DEBUG").arg("SEGFAULT").query::<String>(&mut c);
    let status = exit_status(&mut server);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    let log = std::fs::read_to_string(dir.join("log")).expect("the log");
    for expected in [
        "crashed by signal: 11 (SIGSEGV)",
        "------ STACK TRACE ------",
        "crash_on_request",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }
}
