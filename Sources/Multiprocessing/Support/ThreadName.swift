import CMultiprocessing

/// Names the calling thread (the kernel keeps 15 bytes; a character is never cut in half).
func setThreadName(_ name: String) {
    var prefix = ""
    for character in name {
        if prefix.utf8.count + String(character).utf8.count > 15 { break }
        prefix.append(character)
    }
    mp_set_thread_name(prefix)
}
