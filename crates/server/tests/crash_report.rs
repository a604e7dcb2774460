//! DEBUG PANIC and DEBUG SEGFAULT crash the server on purpose, only where
//! `enable-debug-command` allows it, and a crash leaves Redis' bug report in the log: a
//! panic's message, and the fatal signal with a stack trace. A panic that reaches an event
//! loop stops the whole process (a loop that died alone left its clients unanswered while
//! the others answered PING).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

const CARMINE: &str = env!("CARGO_BIN_EXE_carmine-server");

/// A server on a free port logging to `dir/log`; killed when dropped.
fn spawn(dir: &Path, extra: &[&str]) -> common::Proc {
    let port = common::free_port();
    let child = common::local_server_command(CARMINE, None, port, dir)
        .arg("--logfile")
        .arg(dir.join("log"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn carmine-server");
    assert!(common::wait_port(port, 10), "the server listens");
    common::Proc { child, port }
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(5)))
        .expect("connects")
}

/// How the server's process ended, waiting at most 20 s.
fn exit_status(server: &mut common::Proc) -> ExitStatus {
    let mut status = None;
    common::wait_until(20, || {
        status = server.child.try_wait().ok().flatten();
        status.is_some()
    });
    status.expect("the server stopped")
}

/// Sends `DEBUG <sub>` to a server started with `enable-debug-command <setting>`;
/// returns how the process ended (waiting at most 20 s) and its log.
fn crash_on_request(setting: &str, sub: &str) -> (ExitStatus, String) {
    let dir = common::scratch_dir();
    let mut server = spawn(&dir, &["--enable-debug-command", setting]);
    let _ = redis::cmd("DEBUG")
        .arg(sub)
        .query::<String>(&mut connect(server.port));
    let status = exit_status(&mut server);
    let log = std::fs::read_to_string(dir.join("log")).expect("the log");
    (status, log)
}

#[test]
fn crashing_on_request_is_refused_unless_enabled() {
    let dir = common::scratch_dir();
    let server = spawn(&dir, &[]);
    let mut c = connect(server.port);
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
    let (status, log) = crash_on_request("yes", "PANIC");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
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
    let (status, log) = crash_on_request("local", "SEGFAULT");
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    for expected in [
        "crashed by signal: 11 (SIGSEGV)",
        "------ STACK TRACE ------",
        "crash_on_request",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }
}

/// `local` counts the Unix socket's clients as local, as Redis does.
#[test]
fn debug_panic_from_the_unix_socket_is_local() {
    use std::io::Write;
    let dir = common::scratch_dir();
    let socket = dir.join("carmine.sock");
    let socket_arg = socket.display().to_string();
    let mut server = spawn(
        &dir,
        &[
            "--enable-debug-command",
            "local",
            "--unixsocket",
            &socket_arg,
        ],
    );
    assert!(
        common::wait_until(10, || socket.exists()),
        "the socket exists"
    );
    let mut unix = std::os::unix::net::UnixStream::connect(&socket).expect("connects");
    unix.write_all(b"*2\r\n$5\r\nDEBUG\r\n$5\r\nPANIC\r\n")
        .expect("write");
    let status = exit_status(&mut server);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
}

/// `crash-log-enabled no` leaves a fatal signal's default action alone, as Redis does
/// (no bug report, for a cleaner core dump); the panic's own message is still logged.
#[test]
fn without_the_crash_log_a_crash_writes_no_report() {
    let dir = common::scratch_dir();
    let mut server = spawn(
        &dir,
        &["--enable-debug-command", "yes", "--crash-log-enabled", "no"],
    );
    let _ = redis::cmd("DEBUG")
        .arg("PANIC")
        .query::<String>(&mut connect(server.port));
    let status = exit_status(&mut server);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let log = std::fs::read_to_string(dir.join("log")).expect("the log");
    assert!(
        log.contains("Guru Meditation: DEBUG PANIC called at Unix time"),
        "{log}"
    );
    for absent in ["STACK TRACE", "crashed by signal", "BUG REPORT"] {
        assert!(!log.contains(absent), "{absent:?} in:\n{log}");
    }
}

/// CONFIG SET crash-log-enabled takes effect without a restart.
#[test]
fn the_crash_log_follows_config_set() {
    let dir = common::scratch_dir();
    let mut server = spawn(&dir, &["--enable-debug-command", "yes"]);
    let mut c = connect(server.port);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("crash-log-enabled")
        .arg("no")
        .query(&mut c)
        .expect("CONFIG SET");
    let _ = redis::cmd("DEBUG").arg("SEGFAULT").query::<String>(&mut c);
    let status = exit_status(&mut server);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    let log = std::fs::read_to_string(dir.join("log")).expect("the log");
    assert!(!log.contains("crashed by signal"), "{log}");
}
