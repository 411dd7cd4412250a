//! The peer mesh over TCP 6783: handshake, topology gossip, connection management.
//! Single-host routers run without peers; the mesh is built in the multi-host issue.
