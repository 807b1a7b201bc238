//! openraft's storage conformance suite, run against EventStore's RocksDB
//! log store and state machine.

use eventstore::raft::log_store::LogStore;
use eventstore::raft::types::TypeConfig;
use eventstore::store::{db, Keyspace, StateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = db::open(&dir.path().join("db")).expect("open db");
        let sm = StateMachine::open(
            Keyspace::new(database.clone()),
            dir.path().join("snapshots"),
        )
        .expect("open state machine");
        Ok((dir, LogStore::new(database), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_openraft_suite() {
    Suite::test_all(Builder)
        .await
        .expect("openraft storage suite");
}
