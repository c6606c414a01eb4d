import Multiprocessing
#if canImport(Glibc)
import Glibc
#endif
let lock = Lock()
let mem = try SharedMemory(size: 8)
let counter = mem.buffer.baseAddress!.assumingMemoryBound(to: Int.self)
var ps: [Process] = []
for i in 0..<4 {
    let p = Process(name: "w\(i)") {
        for _ in 0..<100_000 { try lock.withLock { counter.pointee += 1 } }
    }
    try p.start(); ps.append(p)
}
for p in ps { try p.join(); print(p.name, p.pid!, p.exitCode!) }
print("count", counter.pointee)
let k = Process { try lock.acquire(); Glibc.sleep(100) }
try k.start(); Glibc.usleep(100_000); try k.kill(); 
let t0 = ContinuousClock.now
do { try lock.acquire() } catch { print("caught", error, ContinuousClock.now - t0) }
try k.join(); print("k exit", k.exitCode!)
