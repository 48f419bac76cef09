"""Interop tests: wireguard-go and the kernel's TCP stack against the gateway, in network namespaces."""
