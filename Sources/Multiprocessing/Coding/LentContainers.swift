import Synchronization

/// A keyed container made once per key type and lent to one value at a time.
///
/// `KeyedDecodingContainer(_:)` and `KeyedEncodingContainer(_:)`, called from code generic over
/// the key type (a `Codable` type's `CodingKeys` reach the coder only as metadata), look up two
/// generic types' metadata, allocate a box and later free it: about 1,000 instructions a
/// container, the largest cost of coding a small struct. A lent container costs a table look-up
/// and an atomic exchange instead.
///
/// The container reads its `State` (where its entries are) through ``state``, which each loan
/// sets. A loan lasts until the value that took it is finished (``ContainerLoans/end(downTo:)``),
/// so a container must not be used after its value's `init(from:)` or `encode(to:)` has returned
/// (its input or output is gone by then anyway). A container asked for while its loan is out
/// (a value nested in one of its own type, another thread) is made afresh, as is every one of
/// its type in a child forked while another thread had it out.
final class LentContainer<Container, State>: ContainerLoan {
    /// The state of the current loan.
    let state: UnsafeMutablePointer<State>
    private let container: Container

    /// `container` must read its state through `state` (which the lent container then owns).
    init(state: UnsafeMutablePointer<State>, container: Container) {
        self.state = state
        self.container = container
    }

    deinit { state.deallocate() }

    /// The container, whose state the caller has set. Not inlined: compiled generic over this
    /// class's parameters, which it reads from `self`; inlined into a caller generic over the key
    /// type, copying the container would look up its type's metadata again.
    @inline(never)
    func lend() -> Container { container }
}

/// The lent container stored in `table` for `key`, made by `make` the first time (another
/// thread may make one at the same time: one of them is kept).
///
/// Not a static method of ``LentContainer``: calling one passes the class's metadata, which a
/// caller generic over the key type would look up each time.
@inline(__always)
func lentContainer<Container, State>(
    _ key: Any.Type, in table: TypeTable, _ make: () -> LentContainer<Container, State>
) -> LentContainer<Container, State> {
    let word = table.value(for: key) ?? keepLentContainer(make(), for: key, in: table)
    return Unmanaged<LentContainer<Container, State>>.fromOpaque(UnsafeRawPointer(bitPattern: word)!)
        .takeUnretainedValue()
}

@inline(never)
private func keepLentContainer(_ made: ContainerLoan, for key: Any.Type, in table: TypeTable) -> UInt {
    // The table keeps its container for good: it holds one reference that is never released.
    let word = UInt(bitPattern: Unmanaged.passRetained(made).toOpaque())
    let stored = table.insert(word, for: key)
    if stored != word { Unmanaged<ContainerLoan>.fromOpaque(UnsafeRawPointer(bitPattern: word)!).release() }
    return stored
}

/// Whether a lent container is out, and the loan taken before it by the same coding call.
class ContainerLoan {
    fileprivate let out = Atomic<Bool>(false)
    /// The address of the previous loan of the coding call that has this one out (0: none).
    fileprivate let previous = Atomic<UInt>(0)
}

/// The loans of one encode or decode call, newest first: a list through the loans themselves.
struct ContainerLoans {
    /// The address of the newest loan (0: none); a value notes it before it starts.
    private(set) var last: UInt = 0

    /// Takes `loan` if it is not out (in this call or another thread).
    @inline(__always)
    mutating func take(_ loan: ContainerLoan) -> Bool {
        // Acquiring: the state the loan's last holder wrote happened before it ended the loan.
        guard !loan.out.exchange(true, ordering: .acquiring) else { return false }
        loan.previous.store(last, ordering: .relaxed)  // read only by this call
        last = UInt(bitPattern: Unmanaged.passUnretained(loan).toOpaque())
        return true
    }

    /// Ends the loans taken since `last` was `mark`, newest first.
    @inline(__always)
    mutating func end(downTo mark: UInt) {
        while last != mark {
            let loan = Unmanaged<ContainerLoan>.fromOpaque(UnsafeRawPointer(bitPattern: last)!).takeUnretainedValue()
            last = loan.previous.load(ordering: .relaxed)
            loan.out.store(false, ordering: .releasing)  // pairs with the acquiring exchange of the next taker
        }
    }
}
