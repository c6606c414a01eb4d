// The seed's programs, in Swift: `swift run multiprocessing-examples <name>` (or `all`).
import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// A spawn target: the spawned child runs it after `Spawn.bootstrap` finds it by name.
struct CountArguments: Codable, Sendable {
    var lock: Lock
    var memory: SharedMemory
    var times: Int
}

let spawnedCounter = SpawnTarget<CountArguments>("spawned-counter") { args in
    let counter = args.memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self)
    for _ in 0..<args.times { try args.lock.withLock { counter.pointee += 1 } }
    try await Task.sleep(for: .milliseconds(1))  // a spawned child is a full Swift process
    print("spawned child", Process.current.pid ?? 0, "of", Process.current.parentPID, "counted", args.times)
}

@main
enum Examples {
    static let usage = """
        usage: multiprocessing-examples [<name>]   (default: all)
          processes | my-process | threads | lock | deadlock | spawn | queue | download | producer-consumer |
          pool | pool-blocking | pool-queue | pool-map | coroutine | gather | echo | all
          (pool-throughput: measured separately)
        """

    static func main() {
        Spawn.bootstrap(spawnedCounter)  // first thing: in a spawned child this runs the target
        // One optional argument: parsed by hand, so the examples need nothing beyond the library.
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.contains(where: { $0 == "-h" || $0 == "--help" }) {
            print(usage)
            return
        }
        guard arguments.count <= 1 else {
            printError("error: one example name at most\n\(usage)")
            exit(64)  // EX_USAGE
        }
        do {
            try run(arguments.first ?? "all")
        } catch {
            printError("error: \(error)")
            exit(1)
        }
    }

    /// One line on stderr (Glibc's `stderr` is a global var, which Swift 6 will not read from here).
    static func printError(_ text: String) {
        var line = text + "\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }

    static func run(_ name: String) throws {
        let all: [(String, () throws -> Void)] = [
            ("processes", processes), ("my-process", myProcess), ("threads", threads),
            ("lock", lockList), ("deadlock", deadlock), ("spawn", spawn),
            ("queue", queueProgram), ("download", downloadAndGetfile), ("producer-consumer", producerConsumer),
            ("pool", nonBlockingPool), ("pool-blocking", blockingPool), ("pool-queue", queueAndPool),
            ("pool-map", poolMap),
            ("coroutine", coroutine), ("gather", gatherSleeps), ("echo", echoServer),
        ]
        let measures: [(String, () throws -> Void)] = [("pool-throughput", poolThroughput)]
        let chosen = name == "all" ? all : (all + measures).filter { $0.0 == name }
        guard !chosen.isEmpty else {
            printError("error: unknown example \(name)\n\(usage)")
            exit(64)
        }
        for (title, program) in chosen {
            print("===== \(title) =====")
            try program()
        }
    }
}

// MARK: - Process creation with two tasks

func task1(_ s: Double, _ name: Int) {
    for _ in 0..<2 {
        try? sleep(for: .seconds(s))
        print("这是任务1", Process.current.pid ?? 0, Process.current.parentPID, name)
    }
}

func task2(_ s: Double, _ name: Int) {
    for _ in 0..<4 {
        try? sleep(for: .seconds(s))
        print("这是任务2", Process.current.pid ?? 0, Process.current.parentPID, name)
    }
}

func processes() throws {
    // As the seed: each task sleeps 2 s before each line; task 2 prints four times, every 2 s.
    let p1 = Process(name: "任务1") { task1(2, 1) }
    let p2 = Process(name: "任务2") { task2(2, 2) }
    try p1.start()
    print(p1.name, "parent:", getpid(), getppid())
    try p2.start()
    print(p2.name, "parent:", getpid(), getppid())
    for p in [p1, p2] {
        let finished = try p.join(timeout: .seconds(10))
        print(p.name, "pid", p.pid ?? 0, "finished", finished, "exitCode", p.exitCode ?? 0, "alive", p.isAlive)
    }
}

// MARK: - A custom process class

final class MyProcess: Process, @unchecked Sendable {
    override func run() {
        for n in 1...3 { print("\(n) 自定义进程\(name)", Process.current.pid ?? 0, Process.current.parentPID) }
    }
}

func myProcess() throws {
    let p = MyProcess(name: "小明")
    try p.start()
    try p.join()
    print("main", getpid(), "child", p.pid ?? 0, "exitCode", p.exitCode ?? -1)
}

// MARK: - Two threads

func download(_ what: String) {
    for i in 1...3 {
        print("下载 \(what) \(i)/3 on thread", Thread.currentName)
        try? sleep(for: .milliseconds(100))
    }
}

func listenMusic() {
    for i in 1...3 {
        print("正在听音乐 \(i)/3 on thread", Thread.currentName)
        try? sleep(for: .milliseconds(150))
    }
}

func threads() throws {
    // As the seed: a download thread, a listen_music thread, and the main thread's own loop.
    let t1 = Thread(name: "aa") { download("音乐") }
    let t2 = Thread(name: "bb") { listenMusic() }
    try t1.start()
    try t2.start()
    var n = 1
    while t1.isAlive || t2.isAlive {  // the seed's `while True`, ended when both threads are
        print("main loop", n)
        try sleep(for: .milliseconds(100))
        n += 1
    }
    try t1.join()
    try t2.join()
    print("both done; alive:", t1.isAlive, t2.isAlive)
}

// MARK: - A lock protecting list1

final class SharedList: @unchecked Sendable {
    var items = [Int](repeating: 0, count: 10)
}

func lockList() throws {
    let list1 = SharedList()
    let lock = Lock()
    let writer = Thread(name: "writer") {
        try lock.withLock {
            for i in list1.items.indices {
                list1.items[i] = 1
                try sleep(for: .milliseconds(20))
            }
        }
    }
    let reader = Thread(name: "reader") {
        try sleep(for: .milliseconds(5))  // the writer takes the lock first
        try lock.withLock {
            for i in list1.items.indices { print("--->", list1.items[i]) }
        }
    }
    try writer.start()
    try reader.start()
    try writer.join()
    try reader.join()
    print("list1 =", list1.items)
}

// MARK: - Two locks, a deadlock, and the timeout that resolves it

func deadlock() throws {
    let lockA = Lock()
    let lockB = Lock()
    // As the seed: thread 1 waits for B with no timeout; thread 2 waits for A at most 5 s, then
    // gives up and releases B, which is what lets thread 1 go on.
    let first = Thread(name: "first") {
        try lockA.acquire()
        print("first: got A")
        try sleep(for: .milliseconds(100))
        try lockB.acquire()  // no timeout: waits until thread 2 gives B up
        print("first: got B")
        try lockB.release()
        try lockA.release()
    }
    let second = Thread(name: "second") {
        try lockB.acquire()
        print("second: got B")
        try sleep(for: .milliseconds(100))
        if try lockA.acquire(timeout: .seconds(5)) {
            print("second: got A")
            try lockA.release()
        } else {
            print("second: gave up A after 5 s: releasing B breaks the deadlock")
        }
        try lockB.release()
    }
    try first.start()
    try second.start()
    try first.join()
    try second.join()
}

// MARK: - The spawn start method

func spawn() throws {
    let arguments = CountArguments(lock: Lock(), memory: try SharedMemory(size: 8), times: 50_000)
    let children = (0..<2).map { Process(name: "spawned-\($0)", spawn: spawnedCounter, argument: arguments) }
    for c in children { try c.start() }
    for c in children { try c.join() }
    print("counter =", arguments.memory.buffer.load(as: Int.self), "(expected 100000)")
}

// MARK: - The queue program: five puts into maxSize 5, the full check, a timed put, five timed gets

func queueProgram() throws {
    let q = try Queue<String>(maxSize: 5)
    for item in ["A", "B", "C", "D", "E"] { try q.put(item) }
    print("count:", q.count)
    if !q.isFull {  // the seed's `if not q.full()`
        try q.put("F", timeout: .seconds(3))
    } else {
        print("队列已满！")
    }
    do {
        try q.put("F", timeout: .seconds(3))  // and a timed put on the full queue: full after 3 s
    } catch QueueError.full {
        print("put F: the queue stayed full for 3 s")
    }
    for _ in 0..<5 { print("got", try q.get(timeout: .seconds(2))) }
    print("empty:", q.isEmpty)
}

// MARK: - download/getfile: download first, then getfile, which ends when get(timeout: 5) expires

func downloadAndGetfile() throws {
    let q = try Queue<String>(maxSize: 5)
    let download = Process(name: "download") {
        for image in ["girl.jpg", "boy.jpg", "man.jpg"] {
            try q.put(image)
            print("下载完成:", image, "pid", Process.current.pid ?? 0)
            try sleep(for: .milliseconds(300))
        }
    }
    let getfile = Process(name: "getfile") {
        while true {
            do {
                let file = try q.get(timeout: .seconds(5))
                print("保存成功:", file, "pid", Process.current.pid ?? 0)
            } catch QueueError.empty {
                print("全部保存完毕 (no file for 5 s)")
                return
            }
        }
    }
    // As the seed: the download runs to its end before getfile starts.
    try download.start()
    try download.join()
    try getfile.start()
    try getfile.join()
}

// MARK: - Producer and consumer threads with taskDone and join

func producerConsumer() throws {
    let q = try JoinableQueue<String>(maxSize: 4)
    let producer = Thread(name: "producer") {
        for i in 1...8 {
            try q.put("包子\(i)")
            print("生产了 包子\(i)")
        }
    }
    let consumer = Thread(name: "consumer") {
        while true {
            let item: String
            do { item = try q.get() } catch QueueError.shutDown { return }
            print("消费了", item)
            try q.taskDone()
        }
    }
    try producer.start()
    try consumer.start()
    try producer.join()
    try q.join()  // returns once every item put has been task-done
    print("all items processed; unfinished:", q.unfinishedTasks)
    q.shutdown(immediate: true)  // wakes the consumer, whose get now throws: it ends
    try consumer.join()
}
