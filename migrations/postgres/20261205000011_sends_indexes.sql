-- Sends in flight, for crash recovery and a dead instance's rescue: a few rows,
-- found without reading every send.
CREATE INDEX sends_in_flight ON sends (owner) WHERE status = 'sending';
-- Ended sends by age, for [retention]: pending and sending ones are never pruned.
CREATE INDEX sends_ended ON sends (updated_at) WHERE status NOT IN ('pending', 'sending');
