import Foundation

/// Tables on stdout, the JSON file, and bench-results/latest.md.
struct Report {
    var machine: Machine
    var rows: [Row]
    /// One line per target of the benchmark issue that this run could check.
    var targets: [String] = []
    /// Why this run is not a full measurement (`--quick`, one suite), or nil.
    var partial: String? = nil

    /// The engine's rows are the ones whose impl starts with "engine"; each other row of the same
    /// case is a peer, and the ratio says how many times better the engine's first row is.
    func table(for suite: String) -> String {
        let suiteRows = rows.filter { $0.suite == suite }
        var cases: [String] = []
        for r in suiteRows where !cases.contains(r.caseName) { cases.append(r.caseName) }
        var lines: [String] = []
        lines.append("| case | implementation | median | min – max | this library, compared with this row |")
        lines.append("|---|---|---:|---:|---:|")
        for c in cases {
            let caseRows = suiteRows.filter { $0.caseName == c }
            let engine = caseRows.first { $0.impl.hasPrefix("engine") }
            for r in caseRows {
                var ratio = ""
                if let engine, !r.impl.hasPrefix("engine"), r.median > 0, engine.median > 0 {
                    let x = r.higherIsBetter ? engine.median / r.median : r.median / engine.median
                    ratio = ratioInWords(x, unit: r.unit)
                }
                let range = r.samples.count > 1 ? "\(format(r.min)) – \(format(r.max))" : ""
                // A row this run could not measure says why in place of its figure: "n/a (no valgrind)".
                let measured = !r.samples.isEmpty
                let note = r.note.isEmpty || !measured ? "" : " (\(r.note))"
                let median =
                    measured ? "\(format(r.median)) \(r.unit)" : "n/a" + (r.note.isEmpty ? "" : " (\(r.note))")
                lines.append("| \(c) | \(r.impl)\(note) | \(median) | \(range) | \(ratio) |")
            }
        }
        return lines.joined(separator: "\n")
    }

    func format(_ x: Double) -> String {
        if x.isNaN { return "–" }
        if x >= 1e9 { return String(format: "%.2f G", x / 1e9) }
        if x >= 1e6 { return String(format: "%.2f M", x / 1e6) }
        if x >= 1e4 { return String(format: "%.1f k", x / 1e3) }
        if x >= 100 { return String(format: "%.0f", x) }
        return String(format: "%.3g", x)
    }

    var suites: [String] {
        var s: [String] = []
        for r in rows where !s.contains(r.suite) { s.append(r.suite) }
        return s
    }

    func markdown() -> String {
        var text = "# Benchmark results\n\n"
        // readme_results.py looks for this line's "**Not a full run": keep the two in step.
        if let partial { text += "**\(partial)**\n\n" }
        text += "Measured \(machine.date) on \(machine.cpus) × \(machine.cpuModel), Linux \(machine.kernel), "
        text += "\(machine.swift), \(machine.python), commit \(machine.commit.prefix(12)). Median of the runs. "
        text += "Rows named \"engine …\" are this library (its C engine under the Swift API); the last column "
        text += "says how this library's first row of the case compares with each other row, in words "
        text += "(\"2.10× faster\", \"1.85× slower\"; for memory \"less\"/\"more\", for instruction and system-call "
        text += "counts \"fewer\"/\"more\"). \"Task memory\" is the resident memory a run's N tasks add (the "
        text += "case's N: 100, 1000 or 10 000), beyond the program's own. A \"one-way\" latency is half the "
        text += "round trip measured, not a one-way measurement.\n"
        if !targets.isEmpty { text += "\n## Targets\n\n" + targets.joined(separator: "\n") + "\n" }
        for suite in suites { text += "\n## \(suite)\n\n" + table(for: suite) + "\n" }
        return text
    }

    struct JSONRow: Codable {
        var suite, `case`, impl, metric, unit: String
        var median, min, max: Double?
        var runs: Int
        var samples: [Double]
        var note: String?
    }

    struct JSONFile: Codable {
        var machine: Machine
        var results: [JSONRow]
    }

    func json() throws -> Data {
        let results = rows.map { r in
            JSONRow(
                suite: r.suite, case: r.caseName, impl: r.impl, metric: r.metric, unit: r.unit,
                median: r.median.isNaN ? nil : r.median, min: r.min.isNaN ? nil : r.min,
                max: r.max.isNaN ? nil : r.max, runs: r.samples.count, samples: r.samples,
                note: r.note.isEmpty ? nil : r.note)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(JSONFile(machine: machine, results: results))
    }
}

/// How many times better this library's figure is (`x`), in words: "2.62× faster" or "1.85× slower"
/// (for memory "less"/"more", for counts of instructions or system calls "fewer"/"more": a count is
/// not a speed), never a bare ratio below 1.
func ratioInWords(_ x: Double, unit: String) -> String {
    let (better, worse) =
        unit == "instr" || unit == "calls"
        ? ("fewer", "more") : unit.hasSuffix("iB") ? ("less", "more") : ("faster", "slower")
    return x >= 1 ? String(format: "%.2f× %@", x, better) : String(format: "%.2f× %@", 1 / x, worse)
}
