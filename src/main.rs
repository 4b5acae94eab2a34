use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(testmon_run::main_with_args(std::env::args_os()))
}
