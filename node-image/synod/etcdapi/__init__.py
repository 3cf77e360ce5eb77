"""etcd's v3 gRPC API served by a Synod node (docs/etcd-compat.md)."""
