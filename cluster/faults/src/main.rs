//! The `eventstore-faults` binary: fault injection with a linearizability
//! check against the local compose cluster; see [`eventstore_faults`] and
//! `cluster/faults.sh`.

fn main() {
    std::process::exit(eventstore_faults::main());
}
