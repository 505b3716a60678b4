"""The registry: a git repository whose index maps an artifact hash to where its lineage lives.

- `index`: the sharded index (`refs/roar/index/<first two hex>`), lookups and compare-and-swap
  updates, and the registry's settings (`refs/roar/config`);
- `scope`: where a clone's registrations go (a lineage repository and a store prefix);
- `register`: the closure an artifact needs, published to its scope, then indexed;
- `login`: the registry and identity a user works with, and their credentials;
- `server`: `roar registry serve`, dulwich's smart-HTTP application behind token auth;
- `remote`: looking a hash up from anywhere, and the cache its scope's lineage is fetched into.

See docs/registry.md.
"""
