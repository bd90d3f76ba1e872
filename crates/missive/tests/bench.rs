//! `missive bench` smoke runs: each scenario, a few seconds and a handful
//! of users, against the spawned binary. They assert the tool's accounting
//! (nothing lost, nothing duplicated, everything expected arrived), never
//! a timing.

mod common;

use common::*;

/// A server that lets the bench register its users.
fn bench_server(data_dir: &std::path::Path) -> ServerProcess {
    ServerProcess::start_with_env(
        data_dir,
        &[
            ("MISSIVE_LIMITS__REGISTRATIONS_PER_IP_MAX", "100000"),
            ("MISSIVE_LIMITS__DEVICES_PER_ACCOUNT_MAX", "10"),
            ("MISSIVE_LIMITS__SENDS_PER_SEC_PER_DEVICE", "0"),
            ("MISSIVE_LIMITS__SENDS_PER_SEC_PER_ACCOUNT", "0"),
        ],
    )
}

/// Runs `missive bench <args>` and returns its JSON report.
fn bench(server: &ServerProcess, out_dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = out_dir.join(format!("{}.json", args[0]));
    let output = server_command()
        .arg("bench")
        .args(args)
        .args(["--server", &server.url, "--settle-secs", "10", "--out"])
        .arg(&out)
        .output()
        .expect("run missive bench");
    assert!(
        output.status.success(),
        "bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("lost 0 duplicated 0"), "{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&out).expect("report written"))
        .expect("report is JSON")
}

fn assert_clean(report: &serde_json::Value) {
    let tally = &report["tally"];
    assert!(tally["expected"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(tally["delivered"], tally["expected"], "{report}");
    for fault in ["lost", "duplicated", "unexpected", "out_of_order"] {
        assert_eq!(tally[fault], 0, "{fault} in {report}");
    }
}

#[test]
fn every_scenario_runs_without_loss_or_duplicates() {
    // Goal: each scenario completes against a real server, writes a report
    // with its parameters, and its ledger finds every confirmed message
    // delivered exactly once; a baseline run prints ratios.
    // Method: small runs of pairs (closed and open loop), group, drain and
    // idle against one spawned server; idle reads the server's /proc.
    let data_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let server = bench_server(data_dir.path());
    pairs_closed_and_open_loop(&server, out_dir.path());
    group_and_drain(&server, out_dir.path());
    idle_in_one_process_and_in_two(&server, out_dir.path());
}

/// Pairs in a closed loop, then in an open loop with the first run as its
/// baseline.
fn pairs_closed_and_open_loop(server: &ServerProcess, out_dir: &std::path::Path) {
    let pairs = bench(
        server,
        out_dir,
        &[
            "pairs",
            "--pairs",
            "3",
            "--window",
            "4",
            "--duration-secs",
            "1",
        ],
    );
    assert_clean(&pairs);
    assert_eq!(pairs["params"]["pairs"], 3);
    assert!(pairs["figures"]["delivered_per_sec"].as_f64().unwrap() > 0.0);

    let open_loop = bench(
        server,
        out_dir,
        &[
            "pairs",
            "--pairs",
            "2",
            "--rate",
            "50",
            "--duration-secs",
            "1",
            "--tag",
            "fsync=always",
            "--baseline",
        ]
        .into_iter()
        .chain([out_dir.join("pairs.json").to_str().unwrap()])
        .collect::<Vec<_>>(),
    );
    assert_clean(&open_loop);
    assert_eq!(open_loop["params"]["mode"], "open loop");
    assert_eq!(open_loop["params"]["tag.fsync"], "always");
}

fn group_and_drain(server: &ServerProcess, out_dir: &std::path::Path) {
    let group = bench(
        server,
        out_dir,
        &["group", "--members", "4", "--duration-secs", "1"],
    );
    assert_clean(&group);
    // Three receivers each expected every confirmed send.
    let sends = group["params"]["confirmed_sends"].as_u64().unwrap();
    assert!(sends > 0, "{group}");
    assert_eq!(group["tally"]["expected"].as_u64().unwrap(), 3 * sends);

    let drain = bench(
        server,
        out_dir,
        &["drain", "--devices", "4", "--queued", "5", "--fillers", "2"],
    );
    assert_clean(&drain);
    assert_eq!(drain["tally"]["expected"], 20);
    // A device is ready before its first message comes, and both are timed.
    let figure = |name: &str| drain["figures"][name].as_f64().unwrap_or(0.0);
    assert!(figure("ready_p50_us") > 0.0, "{drain}");
    assert!(
        figure("ready_p50_us") <= figure("first_message_p50_us"),
        "{drain}"
    );
}

/// Idle connections, the server's resources read from its /proc; then the
/// same held by two worker processes.
fn idle_in_one_process_and_in_two(server: &ServerProcess, out_dir: &std::path::Path) {
    let pid = server.child.id().to_string();
    let idle = bench(
        server,
        out_dir,
        &[
            "idle",
            "--connections",
            "6",
            "--devices-per-user",
            "3",
            "--idle-secs",
            "1",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(idle["figures"]["connections_lost"], 0.0, "{idle}");
    assert!(idle["figures"]["connect_per_sec"].as_f64().unwrap() > 0.0);
    assert!(idle["figures"]["server_rss_per_connection_bytes"].is_f64());
    assert!(idle["figures"]["server_idle_cpu_percent"].is_f64());
    assert_eq!(idle["figures"]["connections_opened"], 6.0, "{idle}");

    // The same connections held by two worker processes: each opens and
    // holds its share, and their counts come back to the parent.
    let spread = bench(
        server,
        out_dir,
        &[
            "idle",
            "--connections",
            "7",
            "--devices-per-user",
            "3",
            "--idle-secs",
            "1",
            "--workers",
            "2",
        ],
    );
    assert_eq!(spread["params"]["workers"], 2, "{spread}");
    assert_eq!(spread["figures"]["connections_opened"], 7.0, "{spread}");
    assert_eq!(spread["figures"]["connections_lost"], 0.0, "{spread}");
}
