import Multiprocessing
#if canImport(Glibc)
import Glibc
#endif
let p = Process { raise(SIGSEGV) }
try p.start(); try p.join(); print("exit", p.exitCode!)
let q = Process { let x: [Int] = []; print(x[1]) }
try q.start(); try q.join(); print("exit", q.exitCode!)
