-- What every group commit writes, as one INSERT: the new state of each run and step attempt
-- it changed, its events and any new workflow snapshot, one row each (`row` is JSON: a
-- table row as an array, or an event as the API sends it). A projection folds the journal
-- into `runs`, `step_runs`, `events` and `workflow_snapshots` in the background and before
-- any query needs those tables; event reads look in the journal as well.
CREATE TABLE run_journal (
    id BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    run_id VARCHAR,
    row VARCHAR NOT NULL
);
