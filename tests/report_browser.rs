//! The HTML report loads in headless Chromium (Debian package `chromium`, installed by
//! `.ci/run`): its DOM has the plots and tables, and the rendered page shows the series.

use ccq::quant::policy::LayerBits;
use ccq::report::{MethodResult, Report, html};
use std::process::Command;

fn result(method: &str, budget: f64, compression: f64, top1: f64, bits: &[u32]) -> MethodResult {
    MethodResult {
        method: method.into(),
        budget,
        bits: bits
            .iter()
            .enumerate()
            .map(|(i, &b)| LayerBits {
                w: b,
                a: if i == 0 { 8 } else { b },
            })
            .collect(),
        size_bytes: 1000,
        compression,
        avg_bits: 32.0 / compression,
        bops: 1_000_000,
        test_top1: Some(top1),
        loss_points: Some(100.0 * (0.915 - top1)),
        seconds: 10.0,
        note: None,
        epochs: Some(2.0),
        audition_epochs: None,
        test_top1_each: Vec::new(),
    }
}

fn chromium() -> &'static str {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(c).exists() {
            return c;
        }
    }
    panic!("headless Chromium is missing: apt-get install chromium");
}

#[test]
fn report_renders_in_chromium() {
    let report = Report {
        title: "browser check".into(),
        model: "convnet".into(),
        layers: vec![
            "stem.conv".into(),
            "stage1.conv".into(),
            "stage2.conv".into(),
            "fc".into(),
        ],
        fp_test: Some(0.915),
        ft_epochs: 2,
        results: vec![
            result("ccq", 8.0, 8.1, 0.905, &[6, 4, 4, 4]),
            result("ccq", 10.0, 10.2, 0.90, &[4, 3, 3, 3]),
            result("hawq", 8.0, 8.0, 0.90, &[8, 4, 4, 3]),
            result("hawq", 10.0, 10.1, 0.895, &[6, 3, 3, 3]),
        ],
        ccq_steps: vec![],
        control: None,
        notes: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, html(&report)).unwrap();
    let url = format!("file://{}", page.display());
    let profile = dir.path().join("profile");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let out = Command::new(chromium())
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<svg id=\"pareto\""),
        "the Pareto plot is in the DOM"
    );
    assert!(
        dom.contains("<svg id=\"bits0\"") && dom.contains("<svg id=\"bits1\""),
        "one bit chart per budget"
    );
    assert_eq!(dom.matches("<circle").count(), 4, "one marker per result");
    assert!(
        dom.matches("class=\"bar\"").count() >= 16,
        "a bar per layer per method per budget"
    );
    let (results, versus) = dom
        .split_once("id=\"versus\"")
        .expect("the table of CCQ against each method");
    assert_eq!(
        results.matches("<tr>").count(),
        5,
        "results table: header + 4 rows"
    );
    assert_eq!(
        versus.matches("<tr>").count(),
        3,
        "CCQ against HAWQ-style: header + one row per budget"
    );

    let shot = dir.path().join("shot.png");
    let out = Command::new(chromium())
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1000,1400")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&shot).unwrap().to_rgb8();
    // The CCQ series colour (#1f77b4) and the HAWQ one (#d62728) are drawn.
    let near = |p: &image::Rgb<u8>, c: [u8; 3]| {
        p.0.iter()
            .zip(c)
            .all(|(a, b)| (*a as i32 - b as i32).abs() < 20)
    };
    let blue = img.pixels().filter(|p| near(p, [0x1f, 0x77, 0xb4])).count();
    let red = img.pixels().filter(|p| near(p, [0xd6, 0x27, 0x28])).count();
    assert!(
        blue > 200 && red > 200,
        "plots are rendered (blue {blue}, red {red} pixels)"
    );
}
