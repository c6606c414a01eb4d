import Synchronization

/// Tests set it to make the next forked worker hang before it is ready (as one that inherited a
/// held runtime lock would); the parent clears it right after that fork.
let stallNextWorkerForTesting = Atomic<Bool>(false)
