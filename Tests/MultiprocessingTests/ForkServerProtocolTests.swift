import CMultiprocessing
import MultiprocessingTestTargets
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

private struct Unexpected: Error, CustomStringConvertible {
    var description: String
}

@Suite("Fork-server protocol: refusals and unread answers")
struct ForkServerProtocolTests {
    init() { useTestHelper() }

    @Test("a fork whose answer is never read leaves no zombie: closing the connection kills and reaps its child")
    func unreadAnswersReaped() throws {
        // In a child of its own: every child of that process is one of this test's.
        let code = try runInChild(timeout: .seconds(60)) {
            let sent = ForkServer.sendUnansweredForTesting(count: 3)
            guard sent == 0 else { throw Unexpected(description: "send: \(sent)") }
            ForkServer.closeAtExit()
            let me = mp_process_id()
            guard eventually(timeout: .seconds(10), { childPIDs(of: me).isEmpty }) else {
                let left = childPIDs(of: me).map { "\($0) \(String(describing: procStat($0)))" }
                throw Unexpected(description: "children left: \(left)")
            }
        }
        #expect(code == 0)
    }
}

// With the tests that kill this process's forkserver (a serialized suite): it checks the server
// was not restarted.
extension ForkServerTests {
    @Test("a request the server refuses, or one the socket cannot carry, fails alone; the server goes on")
    func refusedRequestFailsAlone() throws {
        let warm = Process(target: TestTargets.fail, argument: ExitJob(code: 0))
        try warm.start()
        #expect(try warm.join(timeout: .seconds(60)))
        let server = try #require(ForkServer.serverPIDForTesting)
        var fds: [Int32] = [-1, -1]
        #expect(mp_pipe(&fds) == 0)
        defer { for fd in fds { closeDescriptor(fd) } }
        let closed = try #require(try? duplicateDescriptor(fds[0]))
        closeDescriptor(closed)
        let answers = ForkServer.startMany([
            ForkServerConnection.Request(daemon: false, descriptors: [fds[0], fds[0]]),  // one target twice
            ForkServerConnection.Request(daemon: false, descriptors: [closed]),  // not open
        ])
        #expect(answers.count == 2)
        for answer in answers {
            guard case .failure(.argumentEncoding) = answer else {
                Issue.record("\(answer)")
                continue
            }
        }
        #expect(ForkServer.serverPIDForTesting == server)  // not restarted
        let after = Process(target: TestTargets.fail, argument: ExitJob(code: 0))
        try after.start()
        #expect(try after.join(timeout: .seconds(60)))
        #expect(after.exitCode == 0)
        #expect(ForkServer.serverPIDForTesting == server)
    }
}

@Suite("A Process object in another process")
struct ProcessElsewhereTests {
    @Test("a Process created in one process cannot be started in a forked copy: createdElsewhere")
    func startedInAnotherProcess() throws {
        let inner = Process {}
        let code = try runInChild(timeout: .seconds(60)) {
            do {
                try inner.start()
            } catch ProcessError.createdElsewhere {
                return
            }
            _ = try? inner.join(timeout: .seconds(10))
            throw Unexpected(description: "started")
        }
        #expect(code == 0)
        #expect(inner.pid == nil)
        try inner.start()  // where it was created, it starts
        #expect(try inner.join(timeout: .seconds(60)))
        #expect(inner.exitCode == 0)
    }
}
