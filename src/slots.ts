// A slot pool shared beyond this process: the connection limit of a whole cluster of workers (or,
// later, of several machines). Runtime-free contract; implementations live with their runtime.

export interface SlotPool {
  /** Takes one slot of the shared limit; false when the whole pool is full. */
  acquire(): boolean | Promise<boolean>;
  /** Gives one back (called once per acquired slot, from the registry's release). */
  release(): void;
}
