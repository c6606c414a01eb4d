// The seed's pool programs: a non-blocking pool, a blocking one, and a queue filled by pool tasks.
import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Non-blocking pool: Pool(3), five tasks with applyAsync, close, join, "over" last

func nonBlockingPool() throws {
    // As the seed: three workers for five tasks, each announcing its start in the worker.
    let pool = try ProcessPool(processes: 3) { (task: String) -> String in
        print("开始做任务啦!", task, "pid", Process.current.pid ?? 0)
        let start = ContinuousClock.now
        try sleep(for: .seconds(Double.random(in: 0..<2)))
        return "\(task) 用时 \(twoDecimals((ContinuousClock.now - start).seconds)) s, pid \(Process.current.pid ?? 0)"
    }
    for t in ["听音乐", "吃饭", "洗衣服", "散步", "做饭"] {
        pool.applyAsync(t, callback: { print("完成", $0) }, errorCallback: { print("failed", $0) })
    }
    pool.close()
    try pool.join()
    print("----------over----------")
}

// MARK: - Blocking pool: apply runs the tasks one after another

func blockingPool() throws {
    let pool = try ProcessPool(processes: 3) { (task: String) -> String in
        try sleep(for: .milliseconds(300))
        return "\(task) done by pid \(Process.current.pid ?? 0)"
    }
    for t in ["听音乐", "吃饭", "洗衣服"] {
        print(try pool.apply(t))
    }
    pool.close()
    try pool.join()
    print("----------over----------")
}

// MARK: - A queue between two pool tasks, a writer and a reader, reported by callbacks

enum Role: String, Codable, Sendable { case writer, reader }

func queueAndPool() throws {
    let q = try Queue<String>(maxSize: 3)
    let pool = try ProcessPool(processes: 2) { (role: Role) -> String in
        switch role {
        case .writer:
            for m in ["A", "B", "C", "D", "E"] {
                try q.put(m)
                print("写入", m, "pid", Process.current.pid ?? 0)
            }
            return "writer done"
        case .reader:
            var got: [String] = []
            while got.count < 5 { got.append(try q.get(timeout: .seconds(5))) }
            print("读取", got.joined(separator: " "), "pid", Process.current.pid ?? 0)
            return "reader got \(got.count)"
        }
    }
    for role in [Role.writer, .reader] {
        pool.applyAsync(role, callback: { print("callback:", $0) }, errorCallback: { print("failed:", $0) })
    }
    pool.close()
    try pool.join()
    print("----------over----------")
}

// MARK: - map, imap and imapUnordered

func poolMap() throws {
    let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in x * x }
    print("map:", try pool.map(Array(1...10), chunkSize: 3))
    print("imap:", pool.imap(1...5).map { (try? $0.get()) ?? -1 })
    print("imapUnordered (sorted):", pool.imapUnordered(1...5).compactMap { try? $0.get() }.sorted())
    pool.close()
    try pool.join()
}

/// `x` with two decimals (no Foundation in the examples).
func twoDecimals(_ x: Double) -> String {
    let hundredths = Int((x * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}

// MARK: - Throughput of trivial tasks (x * 2), next to Python's Pool in the same run

func poolThroughput() throws {
    let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in x * 2 }
    _ = try pool.map(Array(0..<1000), chunkSize: 10)  // warm up: workers running, pages touched
    let tasks = 200_000
    var start = ContinuousClock.now
    let handles = (0..<tasks).map { pool.applyAsync($0) }
    var sum = 0
    for h in handles { sum &+= try h.get() }
    let applyRate = Double(tasks) / (ContinuousClock.now - start).seconds
    precondition(sum == tasks * (tasks - 1))
    let items = Array(0..<10_000_000)
    start = ContinuousClock.now
    let doubled = try pool.map(items, chunkSize: 100_000)
    let mapRate = Double(items.count) / (ContinuousClock.now - start).seconds
    precondition(doubled.count == items.count && doubled[12345] == 24690)
    pool.close()
    try pool.join()
    print("ProcessPool(2).applyAsync: \(Int(applyRate)) tasks/s")
    print("ProcessPool(2).map(chunkSize: 100000): \(Int(mapRate)) tasks/s")
    let python = """
        import time
        from multiprocessing import Pool
        def double(x): return x * 2
        if __name__ == '__main__':
            with Pool(2) as p:
                p.map(double, range(1000), chunksize=10)
                n = 20000; t = time.perf_counter()
                rs = [p.apply_async(double, (i,)) for i in range(n)]
                s = sum(r.get() for r in rs); a = n / (time.perf_counter() - t)
                items = list(range(10_000_000)); t = time.perf_counter()
                out = p.map(double, items, chunksize=100_000); m = len(items) / (time.perf_counter() - t)
                print(f"Python Pool(2).apply_async: {int(a)} tasks/s")
                print(f"Python Pool(2).map(chunksize=100000): {int(m)} tasks/s")
        """
    let path = "/tmp/multiprocessing-pool-peer.py"
    let file = fopen(path, "w")
    if let file {
        fputs(python, file)
        fclose(file)
        fflush(nil)
        _ = system("python3 \(path)")
    }
}
