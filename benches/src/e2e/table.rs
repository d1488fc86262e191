//! The report as text: an aligned table for the terminal, and a Markdown page (the table, the
//! machine it ran on, and how each number was measured).

use std::fmt::Write;

use super::results::{Results, Row};

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

/// The table with aligned columns (numbers right-aligned).
pub fn text(results: &Results) -> String {
    let rows: Vec<[String; 6]> = results.rows().iter().map(cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; 6]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            let numeric = (1..=3).contains(&i);
            if numeric {
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
    let _ = writeln!(out, "{}", line(&HEADER.map(String::from)));
    let _ = writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out
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
         * **Latency**: {lat} events published at {rate}/s; each inbox row seen by a poll every \
         {poll:.0} ms, latency = time seen − stream publish time (resolution ≈ {poll:.0} ms).\n\
         * **History e2e**: `wa-historical` running; {hb} batches ({hsubj}) published flat out; \
         rows = items of the batches.\n\
         * **Peak RSS**: VmHWM of each function just before it was stopped.\n\
         * Every timed phase starts after a `CHECKPOINT`; the functions and the raw SQL write to \
         the same fresh database.\n",
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
        lat = number(r.latency.events),
        rate = super::results::number(r.latency.rate, ""),
        poll = r.latency.poll.as_secs_f64() * 1e3,
        hsubj = r.history_subjects,
    );
    out
}

fn number(n: u64) -> String {
    super::results::number(n as f64, "")
}
