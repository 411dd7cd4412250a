//! The `weave` command (see [`weave::cli`]).

fn main() {
    std::process::exit(weave::cli::main());
}
