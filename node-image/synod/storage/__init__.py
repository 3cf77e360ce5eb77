"""The durable side of a member: the write-ahead log, snapshot files and the
file-system seam (`OsFileSystem` in production, `SimFileSystem` in the
simulator). The Raft core never touches a file; the node driver hands it
`DurableStorage.memory` and asks this package to persist each Ready.
"""
