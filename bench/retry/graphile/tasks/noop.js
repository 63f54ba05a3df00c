// The benchmark's task: does nothing, so the queue itself is what is measured.
module.exports = async () => {};
