//! The report as text: an aligned table for the terminal, and a Markdown page (the table, the
//! machine it ran on, and how each number was measured).

use std::fmt::Write;

use super::raw_tenants::Variant;
use super::results::{Results, Row, BASE_TENANTS};

const HEADER: [&str; 6] = ["what", "measured", "raw limit", "ratio", "target", "result"];

fn cells(row: &Row) -> [String; 6] {
    [
        row.what.clone(),
        row.measured_text(),
        row.limit_text(),
        row.ratio_text(),
        row.target.clone(),
        row.verdict.label().to_owned(),
    ]
}

/// The table with aligned columns (numbers right-aligned), then the tenant sweep.
pub fn text(results: &Results) -> String {
    let rows: Vec<Vec<String>> = results.rows().iter().map(|r| cells(r).to_vec()).collect();
    let mut out = aligned(&HEADER, &rows, |i| (1..=3).contains(&i));
    let sweep = sweep_cells(results);
    if !sweep.is_empty() {
        out.push_str(
            "\ntenant sweep (realtime mix; raw SQL: the same writes over as many schemas)\n",
        );
        out.push_str(&aligned(&sweep_header(), &sweep, |i| i != 2));
    }
    out
}

/// Columns padded to their widest cell; `numeric` columns right-aligned.
fn aligned<S: AsRef<str>>(
    header: &[S],
    rows: &[Vec<String>],
    numeric: impl Fn(usize) -> bool,
) -> String {
    let header: Vec<String> = header.iter().map(|h| h.as_ref().to_owned()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - c.chars().count();
            if numeric(i) {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            }
            out.push_str("  ");
        }
        out.trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&header));
    let _ = writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out
}

fn sweep_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "tenants",
        "wa-realtime",
        "raw SQL (fastest)",
        "ratio to raw",
        "ratio to 4 tenants",
    ]
    .map(String::from)
    .to_vec();
    h.extend(Variant::ALL.iter().map(|v| format!("raw: {}", v.name())));
    h.push("peak RSS".into());
    h.push("held batches".into());
    h
}

/// One line per sweep step: events/s of the function and of the fastest raw variant, the
/// ratios, every variant's rate and the function's RSS.
fn sweep_cells(results: &Results) -> Vec<Vec<String>> {
    let base = results.sweep_at(BASE_TENANTS).map(|s| s.events_per_sec());
    let per_sec = |v: f64| format!("{} /s", number_f(v));
    let pct = |v: Option<f64>| v.map_or("-".into(), |r| format!("{:.1} %", r * 100.0));
    results
        .sweep
        .iter()
        .map(|s| {
            let v = s.events_per_sec();
            let raw = s.raw_per_sec();
            let mut row = vec![
                number(s.tenants as u64),
                per_sec(v),
                format!(
                    "{} ({})",
                    per_sec(raw),
                    s.raw_best().map_or("-", |r| r.variant.name())
                ),
                pct((raw > 0.0).then(|| v / raw)),
                pct(base.filter(|b| *b > 0.0).map(|b| v / b)),
            ];
            row.extend(Variant::ALL.iter().map(|variant| {
                s.raw
                    .iter()
                    .find(|r| r.variant == *variant)
                    .map_or("-".into(), |r| per_sec(r.events_per_sec()))
            }));
            row.push(format!("{:.1} MiB", s.rss as f64 / (1024.0 * 1024.0)));
            row.push(s.held.map_or("?".into(), |h| h.to_string()));
            row
        })
        .collect()
}

/// The Markdown report.
pub fn markdown(results: &Results) -> String {
    let mut out = String::from("# WA Events Processor: end-to-end benchmark\n\n");
    let _ = writeln!(out, "| {} |", HEADER.join(" | "));
    let _ = writeln!(out, "|---|--:|--:|--:|---|---|");
    for row in results.rows() {
        let mut c = cells(&row);
        if c[5] == "FAIL" {
            c[5] = "**FAIL**".into();
        }
        let _ = writeln!(out, "| {} |", c.join(" | "));
    }
    let sweep = sweep_cells(results);
    if !sweep.is_empty() {
        out.push_str(
            "\n## Tenant sweep\n\nThe realtime mix at each tenant count: `wa-realtime` draining \
             it, next to the same writes as raw SQL over as many schemas (the fastest of the \
             variants, each also listed). Chart: `e2e-tenants.png`.\n\n",
        );
        let header = sweep_header();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            header
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 2 { "---|" } else { "--:|" })
                .collect::<String>()
        );
        for row in sweep {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
    }
    out.push_str("\n## Machine\n\n");
    for (label, value) in results.machine.lines() {
        let _ = writeln!(out, "* {label}: {value}");
    }
    let _ = writeln!(out, "* run time: {:.0} s", results.wall.as_secs_f64());
    let r = results;
    let _ = write!(
        out,
        "\n## How it was measured\n\n\
         * **Raw JetStream**: {js} realtime bodies published to a scratch stream (file storage) with \
         1000 acks in flight, then consumed by a pull consumer in fetches of 256 with an explicit \
         ack each.\n\
         * **Raw SQL realtime**: the same {rt} realtime events as the e2e phase, written by \
         hand-written `UNNEST` statements in transactions of {batch} events (inbox rows, chat \
         upserts with unread increments, message upserts, receipt updates, contacts, agents) on \
         {conns} connection(s) at once, each into a tenant schema of its own (`{rts}`…) in the \
         same database, with the planner steered to index lookups as the functions do. Batches \
         are prepared before the clock starts.\n\
         * **Raw SQL history**: the same {hb} `history.messages` batches as the e2e phase, in \
         transactions of {group} batch(es), each batch one bulk message upsert and its inbox \
         row, on the same number of connections, into `{hs}`….\n\
         * **Realtime e2e**: `wa-realtime` running; {rt} events of {tenants} tenants × {agents} \
         agents published flat out; events/s = events ÷ (first sample with every inbox row \
         committed − first publish), sampled every {sample:.0} ms.\n\
         * **History e2e**: `wa-historical` running; {hb} batches ({hsubj}) published flat out; \
         rows = items of the batches.\n\
         * **Latency**: for each of {lat_tenants} tenants ({sagents} agents each), a fresh \
         `wa-realtime` on a scratch database, every tenant warmed up, then events published at \
         {rate}/s: for {settle} s untimed (until all are committed), then for {lat_s} s; the events of up to {polled} of the tenants (spread evenly) are \
         timed: each of their inbox rows seen by a poll every {poll:.0} ms, latency = time seen − \
         stream publish time (resolution ≈ {poll:.0} ms).\n\
         * **Tenant sweep**: at each of {sweep} tenants ({sagents} agents each), {scount} realtime \
         events of that many tenants, written (a) as raw SQL into as many schemas (made by the \
         product's migrations in a template database with the warm-up written, each variant on \
         a fresh copy), in batches of {sbatch} events of a connection's share of the tenants, on \
         up to {conns} connection(s), {ways} ways: {variants} (so many: at most {per_tx} schemas \
         per transaction, as a transaction locks every relation it touches); the fastest is \
         the raw limit; and \
         (b) by a fresh `wa-realtime` with default settings on a scratch database after a \
         warm-up that created every tenant's schema, published flat out; events/s = events ÷ \
         (first sample of its consumer's ack floor covering the last event − first publish), \
         sampled every {sample:.0} ms (the functions ack after commit; the inboxes are counted \
         afterwards).\n\
         * **New-tenant burst**: {btenants} tenants without a schema × {bper} events (each \
         tenant's first events of the mix) published at once to a fresh `wa-realtime`; time from \
         the first publish until the consumer's ack floor covers them all (and the inboxes hold \
         them all); held batches = increase of its `*_batches_held_total` counters \
         (`/metrics`); dead letters = messages the DLQ stream gained. Then {rss_events} more \
         events of those tenants are drained by the same process, and its peak RSS is the \
         \"{btenants} tenants\" RSS.\n\
         * **Peak RSS**: VmHWM of each function just before it was stopped.\n\
         * Every timed phase starts after a `CHECKPOINT` (in a smoke run, only those of the \
         first four phases); the raw SQL and the functions of the first four phases write to the \
         same fresh database, the sweep, latency and burst phases each to scratch databases of \
         their own, dropped afterwards.\n",
        js = number(r.jetstream.messages),
        rt = number(r.realtime.events),
        batch = r.settings["raw_batch"],
        conns = r.raw_realtime.connections,
        group = r.settings["raw_history_group"],
        rts = super::raw_sql::schema_of(super::raw_sql::REALTIME_TENANT),
        hb = number(r.history.events),
        hs = super::raw_sql::schema_of(super::raw_sql::HISTORY_TENANT),
        tenants = r.settings["tenants"],
        agents = r.settings["agents_per_tenant"],
        sample = r.settings["sample_interval_ms"].as_f64().unwrap_or(0.0),
        lat_tenants = list(&r.settings["latency_tenants"]),
        lat_s = r.settings["latency_seconds"],
        settle = r.settings["latency_settle_seconds"],
        polled = super::latency::POLLED_TENANTS,
        rate = super::results::number(
            r.settings["latency_rate"].as_f64().unwrap_or(0.0),
            ""
        ),
        poll = r.settings["latency_poll_ms"].as_f64().unwrap_or(0.0),
        sweep = list(&r.settings["tenants_sweep"]),
        sagents = r.settings["sweep_agents_per_tenant"],
        scount = number(r.settings["sweep_count"].as_u64().unwrap_or(0)),
        sbatch = r.settings["sweep_raw_batch"],
        per_tx = r.settings["raw_schemas_per_tx"],
        ways = Variant::ALL.len(),
        variants = Variant::ALL
            .iter()
            .map(|v| format!("*{}* ({})", v.name(), v.description()))
            .collect::<Vec<_>>()
            .join(", "),
        btenants = number(r.burst.tenants as u64),
        bper = r.burst.per_tenant,
        rss_events = number(r.settings["rss_events"].as_u64().unwrap_or(0)),
        hsubj = r.history_subjects,
    );
    out
}

fn number(n: u64) -> String {
    super::results::number(n as f64, "")
}

fn number_f(v: f64) -> String {
    super::results::number(v, "")
}

/// A JSON array of numbers as `1, 4 and 64`.
fn list(v: &serde_json::Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(|x| number(x.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    match items.split_last() {
        None => "-".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}
