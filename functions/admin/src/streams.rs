//! `wa-admin streams`: each product stream's configuration next to its configured shape, what
//! reconciling would change, keep or only report, and the durable consumers on it. `--apply`
//! reconciles now, exactly as a function does at startup.

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::stream::{Config as StreamConfig, Info};
use async_nats::jetstream::Context;
use clap::Args;
use futures::TryStreamExt;
use serde_json::{json, Value};
use wa_shared::settings::vars::{NatsVars, StreamVars};
use wa_shared::transport::reconcile::{compare, duration, Setting, DUPLICATE_WINDOW};
use wa_shared::transport::streams::{
    configured_specs, consumer_filters, ensure_stream, is_stream_not_found, StreamSpec, Verdict,
};

use crate::table;

#[derive(Args)]
pub struct StreamsArgs {
    /// Reconcile now, as a function does at startup: add missing subjects, apply
    /// STREAM_REPLICAS and DLQ_MAX_AGE when set; never lowers an operator's tuning.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    streams: StreamVars,
}

pub async fn run(nats: NatsVars, args: StreamsArgs, json: bool) -> anyhow::Result<()> {
    let client = crate::connect_nats(nats).await?;
    let server = client.server_info().version;
    let js = async_nats::jetstream::new(client);
    let specs = configured_specs(
        args.streams.stream_replicas.map(usize::from),
        args.streams.dlq_max_age,
    );
    let mut report = Vec::new();
    for spec in &specs {
        let applied = if args.apply {
            let r = ensure_stream(&js, spec)
                .await
                .with_context(|| format!("reconciling {}", spec.name))?;
            Some(json!({
                "created": r.created,
                "updated": r.refused.is_none() && r.differences.iter().any(|d| d.verdict == Verdict::Update),
                "refused": r.refused,
            }))
        } else {
            None
        };
        let mut view = describe(&js, spec).await?;
        if let Some(a) = applied {
            view["applied"] = a;
        }
        report.push(view);
    }
    if json {
        let out = json!({"server_version": server, "streams": report});
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        println!("nats-server {server}");
        for view in &report {
            print_stream(view);
        }
    }
    Ok(())
}

/// One stream as JSON: its configuration, the configured shape, the differences, its consumers.
async fn describe(js: &Context, spec: &StreamSpec) -> anyhow::Result<Value> {
    let configured = configured_view(spec);
    let mut stream = match js.get_stream(spec.name).await {
        Ok(s) => s,
        Err(e) if is_stream_not_found(&e) => {
            return Ok(json!({
                "stream": spec.name, "exists": false, "configured": configured,
                "differences": [], "consumers": [],
            }))
        }
        Err(e) => return Err(anyhow!(e).context(format!("reading stream {}", spec.name))),
    };
    let info: Info = stream
        .info()
        .await
        .with_context(|| format!("reading stream {}", spec.name))?
        .clone();
    let differences = compare(spec, &info.config).differences;
    let consumers: Vec<Value> = stream
        .consumers()
        .map_ok(|c| {
            json!({
                "name": c.name,
                "filters": consumer_filters(&c.config),
                "num_pending": c.num_pending,
                "num_ack_pending": c.num_ack_pending,
            })
        })
        .try_collect()
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("listing the consumers of {}", spec.name))?;
    Ok(json!({
        "stream": spec.name,
        "exists": true,
        "current": current_view(&info.config),
        "configured": configured,
        "state": {
            "messages": info.state.messages,
            "bytes": info.state.bytes,
            "first_sequence": info.state.first_sequence,
            "last_sequence": info.state.last_sequence,
        },
        "differences": differences,
        "consumers": consumers,
    }))
}

fn limit(v: i64) -> String {
    if v <= 0 {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn current_view(c: &StreamConfig) -> Value {
    json!({
        "subjects": c.subjects.join(", "),
        "retention": format!("{:?}", c.retention).to_lowercase(),
        "storage": format!("{:?}", c.storage).to_lowercase(),
        "replicas": c.num_replicas.max(1).to_string(),
        "max_age": duration(c.max_age),
        "duplicate_window": duration(c.duplicate_window),
        "max_bytes": limit(c.max_bytes),
        "max_msgs": limit(c.max_messages),
        "max_msgs_per_subject": limit(c.max_messages_per_subject),
        "max_msg_size": limit(i64::from(c.max_message_size)),
        "discard": format!("{:?}", c.discard).to_lowercase(),
    })
}

fn configured_view(spec: &StreamSpec) -> Value {
    let replicas = match spec.replicas {
        Setting::Explicit(n) => n.to_string(),
        Setting::Default(n) => format!("{n} (new stream; STREAM_REPLICAS unset)"),
    };
    let max_age = match spec.max_age {
        Setting::Explicit(d) => duration(d),
        Setting::Default(d) => format!("{} or longer", duration(d)),
    };
    json!({
        "subjects": spec.subjects.join(", "),
        "retention": "limits",
        "storage": "file",
        "replicas": replicas,
        "max_age": max_age,
        "duplicate_window": format!("{} or longer", duration(DUPLICATE_WINDOW)),
        "max_bytes": "unlimited",
        "max_msgs": "unlimited",
        "max_msgs_per_subject": "unlimited",
        "max_msg_size": "unlimited",
        "discard": "old",
    })
}

const FIELDS: [&str; 11] = [
    "subjects",
    "retention",
    "storage",
    "replicas",
    "max_age",
    "duplicate_window",
    "max_bytes",
    "max_msgs",
    "max_msgs_per_subject",
    "max_msg_size",
    "discard",
];

fn print_stream(view: &Value) {
    let name = view["stream"].as_str().unwrap_or_default();
    println!();
    if view["exists"] == false {
        println!(
            "{name}: missing (a function creates it at startup, or `wa-admin streams --apply`)"
        );
        return;
    }
    let state = &view["state"];
    println!(
        "{name}: {} messages, {} bytes, sequences {}..{}",
        state["messages"], state["bytes"], state["first_sequence"], state["last_sequence"]
    );
    let differences = view["differences"].as_array().cloned().unwrap_or_default();
    let verdict_of = |field: &str| {
        differences
            .iter()
            .filter(|d| {
                let f = d["field"].as_str().unwrap_or_default();
                f == field || (field == "subjects" && f == "extra subjects")
            })
            .map(|d| d["verdict"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows: Vec<Value> = FIELDS
        .iter()
        .map(|f| {
            let verdict = verdict_of(f);
            // Subjects are counted here; the differences below name the ones that differ.
            let cell = |side: &str| match (*f, view[side][f].as_str()) {
                ("subjects", Some(list)) => json!(format!("{} subjects", list.split(", ").count())),
                _ => view[side][f].clone(),
            };
            json!({
                "setting": f,
                "current": cell("current"),
                "configured": cell("configured"),
                "reconcile": if verdict.is_empty() { "ok".to_owned() } else { verdict },
            })
        })
        .collect();
    table::print(&["setting", "current", "configured", "reconcile"], &rows);
    for d in &differences {
        println!(
            "  {:<6}  {}: {}",
            d["verdict"].as_str().unwrap_or_default(),
            d["field"].as_str().unwrap_or_default(),
            d["reason"].as_str().unwrap_or_default()
        );
    }
    if let Some(applied) = view.get("applied") {
        println!("  applied: {applied}");
    }
    let consumers: Vec<Value> = view["consumers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            let filters = c["filters"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            c["filters"] = Value::String(if filters.is_empty() {
                "(whole stream)".into()
            } else {
                filters
            });
            c
        })
        .collect();
    println!();
    table::print(
        &["name", "filters", "num_pending", "num_ack_pending"],
        &consumers,
    );
}
