-- imagery 0014: rate limits of one API key, per RPC class ({"create": 100, ...}; a class
-- left out has no key limit, only the project's). Both limits apply to the key's calls.
ALTER TABLE api_keys ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}';
