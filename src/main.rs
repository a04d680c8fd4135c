//! `ccq`: learned mixed-precision quantization of CNNs from the command line.

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Learned mixed-precision quantization of convolutional networks (CCQ).
#[derive(Parser, Debug)]
#[command(name = "ccq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a full-precision model.
    Train(cli::jobs::TrainArgs),
    /// Quantization-aware training at uniform bits (--bits W/A) or a per-layer policy (--policy).
    Qat(cli::jobs::QatArgs),
    /// Evaluate a checkpoint on the test split.
    Eval(cli::jobs::EvalArgs),
    /// Print a checkpoint's layers, bits, size and BOPs.
    Info(cli::inspect::InfoArgs),
    /// Search a mixed-precision policy with CCQ (the main job).
    Quantize(Box<cli::quantize::QuantizeArgs>),
    /// Export a quantized checkpoint or run as packed integers (.ccq), optionally ONNX QDQ.
    Export(cli::deploy::ExportArgs),
    /// Run a .ccq model with the integer-only engine on the test split.
    Infer(cli::deploy::InferArgs),
    /// Compare CCQ with Hessian-aware, uniform and random policies at the same budgets.
    Compare(Box<cli::compare::CompareArgs>),
    /// Render the HTML report of a ccq quantize run.
    Report(cli::compare::ReportArgs),
    /// Time a QAT training step or inference on random data.
    Bench(cli::bench::BenchArgs),
}

fn main() {
    ccq::device::tune_allocator();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Train(a) => cli::jobs::train(a),
        Command::Qat(a) => cli::jobs::qat(a),
        Command::Eval(a) => cli::jobs::eval(a),
        Command::Info(a) => cli::inspect::info(a),
        Command::Quantize(a) => {
            let m = matches
                .subcommand_matches("quantize")
                .expect("parsed as quantize");
            cli::quantize::quantize(*a, m)
        }
        Command::Bench(a) => cli::bench::bench(a),
        Command::Export(a) => cli::deploy::export(a),
        Command::Compare(a) => cli::compare::compare(*a),
        Command::Report(a) => cli::compare::report(a),
        Command::Infer(a) => cli::deploy::infer(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
