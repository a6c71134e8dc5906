"""Federation adapters: identity, signed HTTP, the peer client and executor, the host side."""
