// The cluster limit: `maxConnections` shared by more than one process (the workers of a Node
// cluster through their primary, or every node through Redis). Each admitted connection holds one
// slot of it. Runtime-free.

export interface ClusterLimit {
  /** Takes one slot; false when the whole cluster is at its limit. */
  acquire(): boolean | Promise<boolean>;
  /** Gives one back (called once per acquired slot, from the registry's release). */
  release(): void;
}

/** What /stats and /metrics show of a cluster limit kept in Redis. */
export interface ClusterLimitStats {
  kind: 'redis';
  state: 'connected' | 'degraded';
  limit: number;
  /** Slots this node holds in Redis. */
  held: number;
  /** Slots in use by this node's connections. */
  used: number;
  /** Nodes sharing the limit, as last seen. */
  nodes: number;
  /** What this node may use on its own while Redis is unreachable. */
  fallbackShare: number;
}
