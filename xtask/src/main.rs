//! `cargo xtask <task>`: the project's own commands.
//!
//! * `test`  — installs what the tests that drive real clients need (redis-tools, redis-py)
//!   when missing, then runs every test of the workspace (unit, property, integration, doc).
//! * `bench` — criterion micro-benchmarks; `bench --sbs` also runs ../shared/bench's
//!   side-by-side throughput comparison with redis-server.
//! * `fuzz <target> <seconds>` — runs a cargo-fuzz target (installs cargo-fuzz if missing).

use std::path::PathBuf;
use std::process::{exit, Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> bool {
    eprintln!("xtask: running {cmd:?}");
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

fn must(cmd: &mut Command) {
    if !run(cmd) {
        eprintln!("xtask: command failed: {cmd:?}");
        exit(1);
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn have_redis_py() -> bool {
    Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs redis-cli / redis-benchmark / redis-server (the differential test runs the
/// real server beside Carmine) and redis-py when they are missing.
fn install_test_tools() {
    if !have("redis-cli") || !have("redis-benchmark") || !have("redis-server") {
        let sudo = if have("sudo") && !is_root() {
            "sudo "
        } else {
            ""
        };
        let script = format!(
            "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq redis-tools redis-server"
        );
        must(Command::new("sh").arg("-c").arg(script));
    }
    if !have_redis_py() {
        let ok = run(Command::new("python3").args(["-m", "pip", "install", "-q", "redis"]))
            || run(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "-q",
                "--break-system-packages",
                "redis",
            ]));
        if !ok || !have_redis_py() {
            eprintln!("xtask: could not install redis-py");
            exit(1);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn test(extra: &[String]) {
    install_test_tools();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["test", "--workspace", "--all-targets"])
        .args(extra);
    must(&mut cmd);
    // Doc tests are not part of --all-targets.
    let mut doc = Command::new(env!("CARGO"));
    doc.current_dir(root())
        .args(["test", "--workspace", "--doc"]);
    must(&mut doc);
}

fn bench(args: &[String]) {
    let sbs = args.iter().any(|a| a == "--sbs");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["bench", "-p", "carmine-benches"]);
    must(&mut cmd);
    if sbs {
        must(Command::new(env!("CARGO")).current_dir(root()).args([
            "build",
            "--release",
            "-p",
            "carmine-server",
        ]));
        let script = root().join("../shared/bench/throughput.sh");
        must(
            Command::new("bash")
                .arg(script)
                .current_dir(root())
                .env("SERVER_BIN", root().join("target/release/carmine-server")),
        );
    }
}

fn fuzz(args: &[String]) {
    let (Some(target), Some(secs)) = (args.first(), args.get(1)) else {
        eprintln!("usage: cargo xtask fuzz <target> <seconds>   (targets: resp_command, resp_frame, command_args, config_text, rdb_file, restore_payload, repl_payload, aof_file, aof_manifest, sentinel_input, cluster_bus)");
        exit(2);
    };
    if !run(Command::new(env!("CARGO")).args(["fuzz", "--version"])) {
        must(Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--locked"]));
    }
    if target == "cluster_bus" {
        // Messages our encoder wrote, as seeds (see `long_input_args`).
        must(
            Command::new(env!("CARGO"))
                .current_dir(root())
                .env("CARMINE_FUZZ_SEEDS", root().join("fuzz/corpus/cluster_bus"))
                .args([
                    "test",
                    "-q",
                    "-p",
                    "carmine-gossip",
                    "--lib",
                    "write_fuzz_seeds",
                ])
                .args([
                    "--",
                    "--ignored",
                    "--exact",
                    "codec::tests::write_fuzz_seeds",
                ]),
        );
    }
    // cargo-fuzz passes -Z flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
    let mut fuzz = Command::new(env!("CARGO"));
    fuzz.current_dir(root()).env("RUSTC_BOOTSTRAP", "1").args([
        "fuzz",
        "run",
        target,
        "--",
        &format!("-max_total_time={secs}"),
        // LeakSanitizer reports the 32 bytes glibc allocates to register a Rust
        // thread-local's destructor (__cxa_thread_atexit_impl), at random, and
        // stops the run on it; leaks are not what these targets look for.
        "-detect_leaks=0",
    ]);
    fuzz.args(long_input_args(target));
    must(&mut fuzz);
}

/// libFuzzer's arguments for targets whose smallest valid input is long: a cluster bus
/// message has a 2,256-byte header. Left to itself libFuzzer starts from inputs as long
/// as its seeds and lengthens them slowly, so these start at the full length, long
/// enough for the seed holding every sample message back to back (about 28 KB). (Length
/// alone was not enough: from an empty corpus, 240 s at 16 KB found 5 inputs; the
/// target also gets seeds from our encoder.)
fn long_input_args(target: &str) -> &'static [&'static str] {
    match target {
        "cluster_bus" => &["-max_len=65536", "-len_control=0"],
        _ => &[],
    }
}

/// First client port of the local cluster, as Redis' utils/create-cluster uses.
const CLUSTER_PORT: u16 = 30001;
const CLUSTER_NODES: u16 = 6;

/// `cargo xtask cluster start|stop`: a local 6-node cluster (3 masters, 3 replicas) on
/// ports 30001-30006, each node in target/cluster/<port>, created with
/// `redis-cli --cluster create --cluster-replicas 1`.
fn cluster(args: &[String]) {
    let dir = root().join("target/cluster");
    match args.first().map(String::as_str) {
        Some("start") => {
            must(Command::new(env!("CARGO")).current_dir(root()).args([
                "build",
                "--release",
                "-p",
                "carmine-server",
            ]));
            let bin = root().join("target/release/carmine-server");
            let mut addrs = Vec::new();
            for port in CLUSTER_PORT..CLUSTER_PORT + CLUSTER_NODES {
                let d = dir.join(port.to_string());
                let _ = std::fs::create_dir_all(&d);
                must(Command::new(&bin).args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "yes",
                    "--dir",
                    &d.display().to_string(),
                    "--logfile",
                    &d.join("server.log").display().to_string(),
                    "--daemonize",
                    "yes",
                ]));
                addrs.push(format!("127.0.0.1:{port}"));
            }
            // The nodes need a moment to listen before redis-cli talks to them.
            std::thread::sleep(std::time::Duration::from_millis(500));
            let mut create = Command::new("redis-cli");
            create.args(["--cluster", "create"]).args(&addrs).args([
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ]);
            must(&mut create);
            println!("cluster ready: redis-cli -c -p {CLUSTER_PORT}");
        }
        Some("stop") => {
            for port in CLUSTER_PORT..CLUSTER_PORT + CLUSTER_NODES {
                let _ = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "SHUTDOWN", "NOSAVE"])
                    .status();
            }
            if args.iter().any(|a| a == "--clean") {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        _ => {
            eprintln!("usage: cargo xtask cluster <start|stop [--clean]>");
            exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("cluster") => cluster(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test|bench [--sbs]|fuzz <target> <seconds>|cluster <start|stop>>");
            exit(2);
        }
    }
}
