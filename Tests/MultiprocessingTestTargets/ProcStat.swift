// What the resource tracker tests read about processes: /proc/<pid>/stat, shared by the test suite
// and the helper program that plays the tracked program.
#if canImport(Glibc)
    import Glibc
#endif

/// The fields of one process's /proc/<pid>/stat line that the tests look at.
public struct ProcStat: Sendable {
    public var pid: Int32
    /// The kernel's name for the process (`comm`, at most 15 bytes).
    public var name: String
    /// R, S, D, Z (exited, not yet reaped), ...
    public var state: Character
    public var parentPID: Int32
    public var processGroup: Int32

    /// The process `pid` now, or nil if there is none.
    public init?(pid: Int32) { self.init(path: "/proc/\(pid)/stat", pid: pid) }

    /// The stat file at `path` (a process's, or one of its threads' under /proc/<pid>/task).
    init?(path: String, pid: Int32) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let line = buffer[0..<n]
        // "pid (name) state ppid pgrp ...": the name may hold spaces and parentheses.
        guard let open = line.firstIndex(of: UInt8(ascii: "(")), let close = line.lastIndex(of: UInt8(ascii: ")"))
        else { return nil }
        let fields = line[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count >= 3, let parent = Int32(String(decoding: fields[1], as: UTF8.self)),
            let group = Int32(String(decoding: fields[2], as: UTF8.self))
        else { return nil }
        self.pid = pid
        name = String(decoding: line[(open + 1)..<close], as: UTF8.self)
        state = Character(UnicodeScalar(fields[0].first!))
        parentPID = parent
        processGroup = group
    }

    /// Whether the process `pid` has ended: gone, or a zombie that nobody has reaped yet. A leader
    /// thread that has exited shows Z while other threads of its process still run (and hold its
    /// descriptors), so every thread must be a zombie.
    public static func hasEnded(_ pid: Int32) -> Bool {
        guard let stat = ProcStat(pid: pid) else { return true }
        guard stat.state == "Z" || stat.state == "X" else { return false }
        guard let dir = opendir("/proc/\(pid)/task") else { return true }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let text = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let tid = Int32(text), let thread = ProcStat(path: "/proc/\(pid)/task/\(tid)/stat", pid: tid)
            else { continue }
            if thread.state != "Z" && thread.state != "X" { return false }
        }
        return true
    }

    /// The running (not ended) children of `parent` named `name`.
    public static func children(of parent: Int32, named name: String) -> [Int32] {
        children(of: parent).filter { $0.name == name && $0.state != "Z" && $0.state != "X" }.map(\.pid)
    }

    /// Every child of `parent`, zombies included.
    public static func children(of parent: Int32) -> [ProcStat] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var found: [ProcStat] = []
        while let entry = readdir(dir) {
            let text = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let pid = Int32(text), let stat = ProcStat(pid: pid) else { continue }
            if stat.parentPID == parent { found.append(stat) }
        }
        return found
    }
}
