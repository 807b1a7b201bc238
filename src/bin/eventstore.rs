//! The `eventstore` binary; see [`eventstore::cli`].

fn main() {
    std::process::exit(eventstore::cli::main());
}
