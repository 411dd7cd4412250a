//! The final table of `bench/run`: every `<part>.json` in a directory, one line per figure
//! (ours, reference, ratio, target, met). Reads the common shape (`{"part", "rows"}`), the
//! CNI latency bench's shape, and, for any other file, its numeric leaves, so a new part
//! shows up even before it adopts the common shape.
//!
//! Usage: cargo bench --bench summary -- [DIR] (default target/bench)

use serde_json::Value;

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => "-".into(),
    }
}

fn line(
    part: &str,
    metric: &str,
    ours: String,
    reference: String,
    ratio: String,
    target: &str,
    met: &str,
) {
    println!("{part:<12} {metric:<48} {ours:>10} {reference:>30} {ratio:>7} {target:>7} {met:>4}");
}

fn met_text(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

fn common_rows(part: &str, rows: &[Value]) {
    for r in rows {
        let reference = match (r["reference"].as_f64(), r["reference_name"].as_str()) {
            (Some(_), Some(name)) => format!("{} ({name})", num(&r["reference"])),
            _ => "-".into(),
        };
        let ratio = r["ratio"]
            .as_f64()
            .map(|x| format!("{x:.3}"))
            .unwrap_or("-".into());
        let metric = format!(
            "{} [{}]",
            r["metric"].as_str().unwrap_or("?"),
            r["unit"].as_str().unwrap_or("")
        );
        line(
            part,
            &metric,
            num(&r["ours"]),
            reference,
            ratio,
            r["target"].as_str().unwrap_or("-"),
            met_text(&r["met"]),
        );
    }
}

/// benches/cni_latency.rs: per-plugin medians and `ratio.add`/`ratio.del` (target 0.4).
fn cni_latency_rows(part: &str, doc: &Value) {
    for (op, key) in [("ADD", "add_ms"), ("DEL", "del_ms")] {
        let ours = &doc["weave-net"][key]["median"];
        let reference = &doc["bridge+host-local"][key]["median"];
        let ratio = doc["ratio"][op.to_lowercase()].as_f64();
        line(
            part,
            &format!("{op} latency median [ms]"),
            num(ours),
            format!("{} (bridge+host-local)", num(reference)),
            ratio.map(|x| format!("{x:.3}")).unwrap_or("-".into()),
            "<= 0.4",
            ratio
                .map(|r| if r <= 0.4 { "yes" } else { "NO" })
                .unwrap_or("-"),
        );
    }
}

fn leaves(prefix: String, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(p, x, out);
            }
        }
        Value::Number(_) => out.push((prefix, v.clone())),
        _ => {}
    }
}

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "target/bench".into());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    println!("\nSummary of {dir}/*.json (ratio = ours / reference)");
    line(
        "part",
        "metric",
        "ours".into(),
        "reference".into(),
        "ratio".into(),
        "target",
        "met",
    );
    for f in files {
        let part = f.file_stem().unwrap().to_string_lossy().into_owned();
        let doc: Value = match std::fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(e) => {
                println!("{part:<12} unreadable {}: {e}", f.display());
                continue;
            }
        };
        if let Some(rows) = doc["rows"].as_array() {
            common_rows(&part, rows);
        } else if doc.get("weave-net").is_some() && doc["ratio"]["add"].is_number() {
            cni_latency_rows(&part, &doc);
        } else {
            let mut out = Vec::new();
            leaves(String::new(), &doc, &mut out);
            for (k, v) in out {
                line(&part, &k, num(&v), "-".into(), "-".into(), "-", "-");
            }
        }
    }
}
