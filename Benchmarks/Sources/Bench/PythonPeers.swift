import Foundation

/// Runs the Python peers (Benchmarks/python/peers.py) with the machine's python3.
struct PythonPeers {
    let script: String
    let available: Bool

    init() {
        // The script sits beside this package's sources; #filePath is where this file was built from.
        let here = URL(fileURLWithPath: #filePath)
        script =
            here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("python/peers.py").path
        available = !shell("command -v python3").isEmpty && FileManager.default.fileExists(atPath: script)
    }

    /// Draws the charts (one PNG per suite) with matplotlib; says what it did.
    func chart(json: String, into directory: String) -> String {
        let chartScript = URL(fileURLWithPath: script).deletingLastPathComponent().appendingPathComponent("chart.py")
            .path
        guard shell("python3 -c 'import matplotlib' 2>/dev/null && echo yes") == "yes" else {
            return "charts skipped: matplotlib is missing (make deps installs it)"
        }
        return shell("python3 '\(chartScript)' '\(json)' '\(directory)' 2>&1")
    }

    /// The last line the script prints for `name` (for cases that report several numbers).
    func measureText(_ name: String, _ arguments: [String]) throws -> String {
        guard available else { throw BenchError.peer("python3 or \(script) is missing") }
        let output = shell("python3 '\(script)' \(name) \(arguments.joined(separator: " "))")
        return output.split(separator: "\n").last.map(String.init) ?? ""
    }

    /// One measurement of `name` with `arguments`: the number the script prints.
    func measure(_ name: String, _ arguments: [String]) throws -> Double {
        guard available else { throw BenchError.peer("python3 or \(script) is missing") }
        let output = shell("python3 '\(script)' \(name) \(arguments.joined(separator: " "))")
        guard let value = Double(output.split(separator: "\n").last.map(String.init) ?? "") else {
            throw BenchError.peer("python peer \(name) printed: \(output)")
        }
        return value
    }
}
