//! `--format svg` makes an interactive flame graph: load it in headless
//! Chromium, click the hot frame and check that the graph zoomed into it.
//!
//! Needs root (for profiling) and Chromium (`apt-get install -y chromium`).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// The page that loads the flame graph into an iframe (same origin, so the
/// script can reach into it), clicks `burn_cpu_hot` and writes the verdict
/// into `#result`.
const PAGE: &str = r#"<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>flame graph check</title>
<script>
"use strict";
var done = false;
function report(ok, msg) {
  if (done) return;
  done = true;
  document.getElementById("result").textContent = (ok ? "PASS " : "FAIL ") + msg;
}
function check() {
  try {
    var frame = document.getElementById("fg");
    var doc = frame.contentDocument;
    if (!doc) return report(false, "cannot reach into the iframe");
    var win = doc.defaultView;
    var frames = doc.getElementById("frames");
    if (!frames) return report(false, "no #frames in the SVG");
    var unzoom = doc.getElementById("unzoom");
    if (!unzoom) return report(false, "no Reset Zoom (#unzoom) element");
    if (!unzoom.classList.contains("hide"))
      return report(false, "Reset Zoom is visible before any click (did the SVG's script fail?)");
    var target = null, main = null;
    for (var i = 0; i < frames.children.length; i++) {
      var g = frames.children[i];
      var title = g.querySelector("title");
      var text = title ? title.textContent : "";
      if (!target && text.indexOf("burn_cpu_hot") >= 0) target = g;
      if (!main && /^main \(/.test(text)) main = g;
    }
    if (!target)
      return report(false, "no frame titled burn_cpu_hot among " + frames.children.length + " frames");
    if (!main) return report(false, "no frame titled main");
    var rect = target.querySelector("rect");
    if (!rect) return report(false, "burn_cpu_hot's frame has no rect");
    var before = rect.getAttribute("width");
    var mainBefore = main.getAttribute("class") || "";
    rect.dispatchEvent(new win.MouseEvent("click", { bubbles: true, cancelable: true, view: win }));
    var after = rect.getAttribute("width");
    var problems = [];
    if (unzoom.classList.contains("hide")) problems.push("Reset Zoom is still hidden");
    if (Math.abs(parseFloat(after) - 100) > 0.01)
      problems.push("clicked frame is " + after + " wide, not the full width");
    if (!main.classList.contains("parent"))
      problems.push("main (an ancestor) is not shown as a parent: class='" + main.getAttribute("class") + "'");
    var details = "title='" + target.querySelector("title").textContent + "' width " + before +
      " -> " + after + ", main class '" + mainBefore + "' -> '" + main.getAttribute("class") + "'";
    report(problems.length === 0, problems.join("; ") + " [" + details + "]");
  } catch (e) {
    report(false, "exception: " + e);
  }
}
function loaded() {
  // The SVG's own init() finishes in a setTimeout(0); let it run first.
  setTimeout(check, 500);
}
setTimeout(function () { report(false, "the SVG did not load"); }, 4500);
</script>
</head>
<body>
<div id="result">PENDING</div>
<iframe id="fg" src="/flamegraph.svg" width="1200" height="800" onload="loaded()"></iframe>
</body>
</html>
"#;

/// Serves `/` (the page) and `/flamegraph.svg` on 127.0.0.1 from a
/// background thread; returns the port.
fn serve(svg: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let svg = Arc::new(svg);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let svg = Arc::clone(&svg);
            // One thread per connection: Chromium may open idle connections.
            std::thread::spawn(move || {
                let _ = respond(stream, &svg);
            });
        }
    });
    port
}

fn respond(mut stream: TcpStream, svg: &[u8]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body): (&str, &str, &[u8]) = match path {
        "/" => ("200 OK", "text/html; charset=utf-8", PAGE.as_bytes()),
        "/flamegraph.svg" => ("200 OK", "image/svg+xml", svg),
        _ => ("404 Not Found", "text/plain", b"not found"),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// Loads `http://127.0.0.1:port/` in headless Chromium; returns the DOM.
fn dump_dom(port: u16, dir: &Path) -> CmdOutput {
    let profile_dir = dir.join("chromium-profile");
    std::fs::create_dir_all(&profile_dir).expect("create chromium profile dir");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile_dir.display()))
    .arg("--virtual-time-budget=5000")
    .arg("--dump-dom")
    .arg(format!("http://127.0.0.1:{port}/"));
    Running::start(cmd).finish(Duration::from_secs(120))
}

#[test]
fn flamegraph_zooms_on_click() {
    if !require_privileges("flamegraph_zooms_on_click") {
        return;
    }
    let browser = chromium();
    let dir = test_dir("flamegraph_zooms_on_click");
    let exe = compile_c("hot", &dir);
    let mut workload = Workload::spawn(&exe, &["20"]);
    settle();
    workload.assert_running();
    let out = dir.join("flamegraph.svg");
    let pid = workload.pid().to_string();
    let (svg, run) = profile_to_file(
        &["--pid", &pid, "--duration", "3s", "--format", "svg"],
        &out,
    );
    drop(workload);

    let text = String::from_utf8_lossy(&svg).into_owned();
    assert!(
        text.contains("<svg") && text.contains("burn_cpu_hot"),
        "the SVG should be a flame graph showing burn_cpu_hot\n--- svg ---\n{}\n{}",
        truncate(&text, 3000),
        run.describe()
    );

    let port = serve(svg);
    let page = dump_dom(port, &dir);
    let verdict = page
        .stdout
        .split("<div id=\"result\">")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .unwrap_or("(no #result in the dumped DOM)")
        .to_string();
    assert!(
        page.status.success() && !page.timed_out && verdict.starts_with("PASS"),
        "clicking burn_cpu_hot in {} did not zoom the flame graph: {verdict}\n\
         --- chromium ({}) ---\n{}\n(the SVG is kept at {})",
        browser.display(),
        page.status,
        truncate(&page.stderr, 3000),
        out.display()
    );
}
