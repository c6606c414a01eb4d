import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The number of CPUs this process may use: the CPUs its affinity mask allows, lowered to its
/// cgroup's CPU quota (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`, rounded
/// up), and at least 1. Every default pool and loop-group size is this number.
///
/// In a container limited to 2 CPUs on a 64-CPU host this is 2, where Python's
/// `multiprocessing.cpu_count()` says 64 (and `os.process_cpu_count()`, 3.13, applies the
/// affinity mask only); SwiftNIO's `System.coreCount` reads the same limits. Read once, at first
/// use.
public let cpuCount: Int = CPUCount.detect()

/// How ``cpuCount`` is found, in parts that tests feed with fixture text.
enum CPUCount {
    static func detect() -> Int {
        let online = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        var count = affinityCount() ?? online
        if let quota = quota(cgroups: read("/proc/self/cgroup") ?? "", readFile: read) { count = min(count, quota) }
        return max(1, count)
    }

    /// CPUs in the calling thread's affinity mask (inherited by the threads and processes it makes).
    static func affinityCount() -> Int? {
        let n = Int(mp_cpu_affinity_count())
        return n > 0 ? n : nil
    }

    /// The CPU quota of the cgroups `/proc/self/cgroup` names, or nil when none is set: the tightest
    /// of the cgroup and its ancestors (a parent's limit binds its children too). `readFile` reads a
    /// path under `/sys/fs/cgroup` (nil when absent).
    static func quota(cgroups: String, readFile: (String) -> String?) -> Int? {
        var tightest: Int? = nil
        func consider(_ q: Int?) { if let q { tightest = min(tightest ?? q, q) } }
        for entry in parseCgroupFile(cgroups) {
            for directory in ancestors(of: entry.path) {
                if entry.controllers == nil {  // v2: one unified hierarchy
                    consider(readFile("/sys/fs/cgroup\(directory)/cpu.max").flatMap(parseCPUMax))
                } else if entry.controllers!.contains("cpu") {
                    let mount = "/sys/fs/cgroup/" + entry.controllers!.sorted().joined(separator: ",")
                    for base in [mount, "/sys/fs/cgroup/cpu"] {
                        guard let quota = readFile("\(base)\(directory)/cpu.cfs_quota_us"),
                            let period = readFile("\(base)\(directory)/cpu.cfs_period_us")
                        else { continue }
                        consider(parseCFS(quota: quota, period: period))
                        break
                    }
                }
            }
        }
        return tightest
    }

    /// The entries of `/proc/self/cgroup`: `0::/path` (v2: no controllers) or `N:cpu,cpuacct:/path`
    /// (v1). Lines that fit neither form are skipped.
    static func parseCgroupFile(_ text: String) -> [(controllers: Set<String>?, path: String)] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[2].hasPrefix("/") else { return nil }
            if fields[0] == "0" && fields[1].isEmpty { return (nil, String(fields[2])) }
            let controllers = Set(fields[1].split(separator: ",").map(String.init))
            return controllers.isEmpty ? nil : (controllers, String(fields[2]))
        }
    }

    /// v2 `cpu.max`: "QUOTA PERIOD" in microseconds, or "max PERIOD" for no limit.
    static func parseCPUMax(_ text: String) -> Int? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 2, let quota = Int(fields[0]), let period = Int(fields[1]) else { return nil }
        return cpus(quota: quota, period: period)
    }

    /// v1 `cpu.cfs_quota_us` (-1: no limit) and `cpu.cfs_period_us`.
    static func parseCFS(quota: String, period: String) -> Int? {
        guard let q = Int(quota.trimmingWhitespace()), let p = Int(period.trimmingWhitespace()) else { return nil }
        return cpus(quota: q, period: p)
    }

    /// A quota of `quota` µs per `period` µs as whole CPUs, rounded up (1.5 CPUs' worth keeps 2 busy).
    private static func cpus(quota: Int, period: Int) -> Int? {
        guard quota > 0, period > 0 else { return nil }
        return max(1, (quota + period - 1) / period)
    }

    /// `path` and each directory above it, up to the root ("" for the root itself).
    private static func ancestors(of path: String) -> [String] {
        var result: [String] = []
        var current = path.hasSuffix("/") ? String(path.dropLast()) : path
        while true {
            result.append(current)
            guard let slash = current.lastIndex(of: "/") else { break }
            if current.isEmpty { break }
            current = String(current[..<slash])
        }
        return result
    }

    private static func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\t" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) })
        else { return "" }
        return self[start...end]
    }
}
