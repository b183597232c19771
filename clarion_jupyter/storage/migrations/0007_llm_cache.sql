-- The LLM call cache: one reply per key (a hash of what determines the reply: model, host,
-- messages, parameters, response format, tools; never a key), with the agent that asked for
-- clearing by agent, its size for the cap and when it was stored for clearing by age and for
-- evicting the oldest first. A run records whether it asked for the cache (NULL: it did not
-- say), so a resumed run keeps its choice.
CREATE TABLE llm_cache (
    key VARCHAR PRIMARY KEY,
    agent_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    reply VARCHAR NOT NULL,
    bytes BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
ALTER TABLE runs ADD COLUMN cache BOOLEAN;
