//! Configuration reload of the real binary: SIGHUP and `shoal ctl reload` put a new file in
//! force for new requests, keep the cache, refuse a bad file (the running configuration stays)
//! and drop no request under load.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::disk::TempDir;
use crate::process::{free_port, Load, Node};
use crate::support::*;

/// A config file whose only origin is `origin`, plus `extra` lines.
fn write_config(file: &Path, origin: &Origin, extra: &str) {
    std::fs::write(
        file,
        format!("[origin]\nurls = [\"{}\"]\n{extra}", origin.url()),
    )
    .unwrap();
}

/// Waits until the node's configuration generation is `generation`.
async fn wait_for_generation(node: &Node, generation: u64) {
    let mut last = None;
    for _ in 0..500 {
        // A status read that fails (the admin API busy under the test's load) is tried again.
        let status = node.endpoint.status().await;
        if let Some(status) = status {
            if status["config_generation"].as_u64() == Some(generation) {
                return;
            }
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node never reached configuration generation {generation}: {last:?}");
}

/// Runs `shoal ctl --admin ADMIN ARGS`.
async fn ctl(node: &Node, args: &[&str]) -> std::process::Output {
    let admin = format!("http://{}", node.endpoint.admin);
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["ctl", "--admin", &admin])
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sighup_and_ctl_reload_put_a_new_file_in_force_and_refuse_a_bad_one() {
    let first = Origin::start(|_| Reply::ok("from A").header("cache-control", "max-age=60")).await;
    let second = Origin::start(|_| Reply::ok("from B").header("cache-control", "max-age=60")).await;
    let dir = TempDir::new("reload");
    let file = dir.0.join("shoal.toml");
    write_config(&file, &first, "");
    let args: Vec<OsString> = vec!["--config".into(), file.clone().into()];
    let node = Node::start(&args, free_port(), |_| true).await;
    let endpoint = node.endpoint;
    assert_eq!(
        endpoint.get("/kept", "site").await.unwrap(),
        ("MISS".into(), b"from A".to_vec())
    );

    // SIGHUP: the new origin serves new requests; what is cached stays.
    write_config(&file, &second, "");
    node.signal(Signal::SIGHUP);
    wait_for_generation(&node, 2).await;
    assert_eq!(
        endpoint.get("/new", "site").await.unwrap(),
        ("MISS".into(), b"from B".to_vec())
    );
    assert_eq!(
        endpoint.get("/kept", "site").await.unwrap(),
        ("HIT".into(), b"from A".to_vec())
    );

    // A bad file: refused with the file, line and key; the running configuration stays.
    std::fs::write(&file, "[cache]\nmemory = \"lots\"\n").unwrap();
    let refused = ctl(&node, &["reload"]).await;
    assert!(!refused.status.success());
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(
        reason.contains("shoal.toml:2") && reason.contains("cache.memory"),
        "{reason}"
    );
    node.signal(Signal::SIGHUP);
    let status = endpoint.status().await.unwrap();
    assert_eq!(status["config_generation"], 2);
    assert!(
        status["last_reload"]["error"]
            .as_str()
            .is_some_and(|error| error.contains("memory")),
        "{status}"
    );
    assert_eq!(endpoint.get("/other", "site").await.unwrap().1, b"from B");
    let shown = ctl(&node, &["status"]).await;
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("refused"),
        "{shown:?}"
    );

    // `shoal ctl reload`: what changed, and what waits for a restart.
    write_config(
        &file,
        &first,
        "[server]\nworkers = 3\ntcp_notsent_lowat = \"1MiB\"\nvia = \"edge-7\"\n[cache]\nmemory = \"256MiB\"\n",
    );
    let reloaded = ctl(&node, &["reload"]).await;
    assert!(reloaded.status.success(), "{reloaded:?}");
    let summary = String::from_utf8_lossy(&reloaded.stdout);
    assert!(
        summary.contains("generation 3")
            && summary.contains("origin")
            && summary.contains("not applied until a restart: server.workers")
            && summary.contains("server.tcp_notsent_lowat"),
        "{summary}"
    );
    let response = client()
        .get(format!("http://{}/via", endpoint.listen))
        .send()
        .await
        .unwrap();
    let via = response.headers()["via"].to_str().unwrap();
    assert!(via.starts_with("1.1 edge-7 (shoal-"), "{via}");
    assert_eq!(response.text().await.unwrap(), "from A");
    let config = ctl(&node, &["config"]).await;
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(config["cache"]["memory"], "256MiB");
    assert_eq!(config["server"]["workers"], 0, "kept until a restart");
    assert_eq!(
        config["server"]["tcp_notsent_lowat"], "512KiB",
        "kept until a restart"
    );
    let stats = endpoint.stats().await.unwrap();
    assert_eq!(stats["store"]["capacity"], 256 << 20, "{}", stats["store"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_across_reloads_under_load() {
    let handler = |seen: &Seen| {
        Reply::ok(format!("answer for {}", seen.target)).header("cache-control", "max-age=1")
    };
    let first = Origin::start(handler).await;
    let second = Origin::start(handler).await;
    let dir = TempDir::new("reload-load");
    let file = dir.0.join("shoal.toml");
    write_config(&file, &first, "");
    let args: Vec<OsString> = vec!["--config".into(), file.clone().into()];
    let node = Node::start(&args, free_port(), |_| true).await;
    let listen = node.endpoint.listen;

    // The paths change so that misses (origin fetches) run through the reloads too.
    let load = Load::start(listen, 4, |client, n| format!("/w{client}/{n}"));
    for generation in 2..=11 {
        let origin = if generation % 2 == 0 { &second } else { &first };
        write_config(
            &file,
            origin,
            &format!("[server]\nvia = \"gen-{generation}\"\n"),
        );
        node.signal(Signal::SIGHUP);
        wait_for_generation(&node, generation).await;
        load.wait_for(50).await;
    }
    let (ok, failed) = load.stop().await;
    eprintln!("{ok} requests answered across 10 reloads, {failed} failed");
    assert_eq!(failed, 0, "requests failed across reloads");
    assert!(ok >= 500);
    assert!(
        first.seen().len() > 100 && second.seen().len() > 100,
        "both origins served: {} and {}",
        first.seen().len(),
        second.seen().len()
    );
}
