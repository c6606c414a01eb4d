import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("cpuCount: affinity and cgroup quotas")
struct CPUCountTests {
    @Test("cpu.max: a quota over a period, rounded up; 'max' and garbage are no limit")
    func cpuMax() {
        #expect(CPUCount.parseCPUMax("200000 100000\n") == 2)
        #expect(CPUCount.parseCPUMax("150000 100000") == 2)
        #expect(CPUCount.parseCPUMax("50000 100000") == 1)
        #expect(CPUCount.parseCPUMax("max 100000\n") == nil)
        #expect(CPUCount.parseCPUMax("") == nil)
        #expect(CPUCount.parseCPUMax("-5 100000") == nil)
        #expect(CPUCount.parseCPUMax("100000 0") == nil)
        #expect(CPUCount.parseCPUMax("12 34 56") == nil)
    }

    @Test("cgroup v1: cfs_quota_us over cfs_period_us; -1 is no limit")
    func cfs() {
        #expect(CPUCount.parseCFS(quota: "300000\n", period: "100000\n") == 3)
        #expect(CPUCount.parseCFS(quota: "-1\n", period: "100000\n") == nil)
        #expect(CPUCount.parseCFS(quota: "x", period: "100000") == nil)
    }

    @Test("/proc/self/cgroup: the v2 path, the v1 cpu controller's path; other lines skipped")
    func cgroupFile() {
        let entries = CPUCount.parseCgroupFile(
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/system.slice/app.service\nnonsense\n")
        #expect(entries.count == 3)
        #expect(entries.contains { $0.controllers == nil && $0.path == "/system.slice/app.service" })
        #expect(entries.contains { $0.controllers == ["cpu", "cpuacct"] && $0.path == "/docker/abc" })
    }

    @Test("the tightest quota of a cgroup and its ancestors, v2 and v1")
    func quotas() {
        let v2: [String: String] = [
            "/sys/fs/cgroup/a/b/cpu.max": "max 100000\n",
            "/sys/fs/cgroup/a/cpu.max": "300000 100000\n",
        ]
        #expect(CPUCount.quota(cgroups: "0::/a/b\n", readFile: { v2[$0] }) == 3)
        #expect(CPUCount.quota(cgroups: "0::/\n", readFile: { v2[$0] }) == nil)
        let v1: [String: String] = [
            "/sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_quota_us": "250000",
            "/sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
        ]
        #expect(CPUCount.quota(cgroups: "4:cpuacct,cpu:/docker/x\n", readFile: { v1[$0] }) == 3)
        #expect(CPUCount.quota(cgroups: "4:memory:/docker/x\n", readFile: { v1[$0] }) == nil)
    }

    @Test("cpuCount is at least 1 and at most the CPUs online and in the affinity mask")
    func bounds() {
        #expect(cpuCount >= 1)
        #expect(cpuCount <= max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        if let affinity = CPUCount.affinityCount() { #expect(cpuCount <= affinity) }
    }
}
