-- Documents (agents, workflows), runs, one row per step attempt, and the append-only event log.
-- JSON values are stored as VARCHAR: the JSON type re-parses every value on insert, which
-- costs the group commit a third of its time; json_extract() and ::JSON work on them alike.
-- Status columns are deliberately not indexed: an UPDATE of an indexed column is a delete
-- plus an insert in DuckDB, and status changes on every transition.
CREATE TABLE agents (
    id VARCHAR PRIMARY KEY,
    doc VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE workflows (
    id VARCHAR PRIMARY KEY,
    doc VARCHAR NOT NULL,
    source VARCHAR,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- A run keeps the exact workflow it ran, stored once per distinct document (by digest):
-- many runs of one workflow share a snapshot instead of each copying it.
CREATE TABLE workflow_snapshots (
    digest VARCHAR PRIMARY KEY,
    doc VARCHAR NOT NULL
);

CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    workflow_id VARCHAR NOT NULL,
    workflow_name VARCHAR NOT NULL,
    workflow_digest VARCHAR NOT NULL,
    inputs VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    idempotency_key VARCHAR,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    outputs VARCHAR,
    error VARCHAR
);

CREATE TABLE step_runs (
    run_id VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    step_id VARCHAR NOT NULL,
    item_index INTEGER,
    attempt INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    output VARCHAR,
    error VARCHAR,
    PRIMARY KEY (run_id, key, attempt)
);

CREATE TABLE events (
    run_id VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    type VARCHAR NOT NULL,
    step_id VARCHAR,
    ts TIMESTAMP NOT NULL,
    data VARCHAR,
    PRIMARY KEY (run_id, seq)
);
