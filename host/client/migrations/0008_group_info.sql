-- A group's name and topic as verified against the commitments in its membership log, with their salts (JSON), so
-- that this device can pass them on to members added later.
ALTER TABLE e2e_groups ADD COLUMN info TEXT;
