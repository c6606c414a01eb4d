import Glibc
import SystemPackage
import Testing

@testable import Multiprocessing

@Suite("The system-call funnel")
struct SystemCallTests {
    @Test("a result that is not -1 comes back as it is")
    func success() throws {
        #expect(try systemCall { Int32(7) } == 7)
        #expect(try systemCall { Int(0) } == 0)
    }

    @Test("-1 becomes the errno the call set, read before anything else runs")
    func failure() {
        #expect(throws: Errno.badFileDescriptor) { _ = try systemCall { fcntl(-1, F_GETFD) } }
        #expect(throws: Errno.invalidArgument) {
            _ = try systemCall { () -> Int32 in
                errno = EINVAL
                return -1
            }
        }
    }

    @Test("EINTR is retried until the call gives another answer, unless the caller asks to see it")
    func interrupts() throws {
        var calls = 0
        let interruptedTwice = { () -> Int32 in
            calls += 1
            if calls <= 2 {
                errno = EINTR
                return -1
            }
            return 42
        }
        #expect(try systemCall(interruptedTwice) == 42)
        #expect(calls == 3)
        calls = 0
        #expect(throws: Errno.interrupted) { _ = try systemCall(retryingInterrupts: false, interruptedTwice) }
        #expect(calls == 1)
    }

    @Test("a duplicated descriptor is closed on exec, and a bad one is an error")
    func duplicate() throws {
        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        defer {
            closeDescriptor(fds[0])
            closeDescriptor(fds[1])
        }
        let copy = try duplicateDescriptor(fds[0])
        defer { closeDescriptor(copy) }
        #expect(copy != fds[0])
        #expect(try systemCall { fcntl(copy, F_GETFD) } & FD_CLOEXEC != 0)
        #expect(throws: Errno.badFileDescriptor) { _ = try duplicateDescriptor(-1) }
    }
}
