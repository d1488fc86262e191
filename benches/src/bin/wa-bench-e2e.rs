//! `wa-bench-e2e`: the end-to-end benchmark. Starts `wa-realtime` and `wa-historical` against
//! the local stack (a fresh database, the product streams recreated), drives them with the
//! load generator's workload, measures the raw SQL and JetStream limits in the same run, prints
//! a table of ratios and targets, and writes it under `target/bench-report/`.

use std::process::ExitCode;

use clap::Parser;
use wa_benches::e2e::{self, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse().resolved();
    match run(&settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wa-bench-e2e: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings) -> e2e::Result<()> {
    if settings.tracing_overhead {
        let overhead = e2e::run_tracing(settings).await?;
        print!("\n{}", overhead.markdown());
        let files = overhead.write(&settings.out_dir())?;
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        println!("\nreport: {}", names.join(", "));
        return Ok(());
    }
    if settings.placements > 1 {
        let placements = e2e::run_placements(settings).await?;
        print!("\n{}", placements.markdown());
        let files = placements.write(&settings.out_dir())?;
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        println!("\nreport: {}", names.join(", "));
        return Ok(());
    }
    let results = e2e::run(settings).await?;
    print!("\n{}", e2e::table::text(&results));
    let files = e2e::write_report(&results, &settings.out_dir())?;
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("\nreport: {}", names.join(", "));
    Ok(())
}
