//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) opens the admin
//! listener's `/` while clients load the node, and the charts and tables must show live data.
//! Skipped (with a note) where Chromium is not installed, unless `SHOAL_REQUIRE_CHROMIUM` is set
//! (CI sets it). With `SHOAL_DASHBOARD_SCREENSHOT=docs/dashboard.png` (a path from the
//! repository's root), it also saves a screenshot there: how the one in `docs/` is made.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::disk::TempDir;
use crate::support::*;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
}

/// Runs headless Chromium on `url` with `extra` arguments; its standard output.
async fn headless(browser: &'static str, url: String, extra: Vec<String>) -> String {
    let profile = TempDir::new("chromium");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1400,1500",
                // Virtual time: the page's 1 s polls run back to back, as fast as the node
                // answers, so 60 of them take a moment.
                "--virtual-time-budget=60000",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .args(extra)
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of attribute `name` of the element with id `id` in a DOM dump.
fn attribute(dom: &str, id: &str, name: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..start].rfind('<')?;
    let tag_end = start + dom[start..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let value_start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let value_end = value_start + tag[value_start..].find('"')?;
    Some(tag[value_start..value_end].replace("&quot;", "\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_live_data_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_CHROMIUM").is_none(),
            "SHOAL_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("chromium is not installed: dashboard test skipped (apt install chromium)");
        return;
    };
    let origin = Origin::start(|seen| {
        let body = format!("the object at {}", seen.target).repeat(40);
        match seen.target.as_str() {
            target if target.starts_with("/private") => {
                Reply::ok(body).header("cache-control", "private")
            }
            _ => Reply::ok(body).header("cache-control", "max-age=30"),
        }
    })
    .await;
    let node = node(&origin).await;
    let listen = node.listen[0];
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = match n % 10 {
                    0..=4 => "/downloads/big.iso".to_owned(),
                    5..=6 => format!("/img/{}.png", n % 20),
                    7 => "/private/account".to_owned(),
                    _ => format!("/news?page={}", n % 50),
                };
                if let Ok(response) = http.get(format!("http://{listen}{path}")).send().await {
                    let _ = response.bytes().await;
                }
                n += 1;
            }
        })
    };
    let page = format!("http://{}/?interval=1000", node.admin.unwrap());
    let dom = headless(browser, page.clone(), vec!["--dump-dom".into()]).await;

    for chart in [
        "chart-requests",
        "chart-hit",
        "chart-bandwidth",
        "chart-origin",
    ] {
        let points: usize = attribute(&dom, chart, "data-points")
            .unwrap_or_else(|| panic!("{chart} has no data: {dom}"))
            .parse()
            .unwrap();
        assert!(points >= 3, "{chart}: {points} points");
    }
    let requests: Vec<f64> =
        serde_json::from_str(&attribute(&dom, "chart-requests", "data-last").unwrap()).unwrap();
    assert!(requests[0] > 0.0, "hits per second: {requests:?}");
    assert!(requests[4] > 0.0, "passes per second: {requests:?}");
    let bandwidth: Vec<f64> =
        serde_json::from_str(&attribute(&dom, "chart-bandwidth", "data-last").unwrap()).unwrap();
    assert!(bandwidth[0] > 0.0, "{bandwidth:?}");
    assert!(
        dom.contains(&origin.address.to_string()),
        "the upstream table"
    );
    assert!(
        dom.contains(&format!("http://{listen}/downloads/big.iso")),
        "the top URLs"
    );
    assert_ne!(
        attribute(&dom, "upstreams", "data-rows").as_deref(),
        Some("0")
    );

    if let Some(path) = std::env::var_os("SHOAL_DASHBOARD_SCREENSHOT") {
        // Relative to the repository's root (tests run in crates/shoal).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        headless(
            browser,
            page,
            vec![format!("--screenshot={}", path.display())],
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
}
