// NFQueue: placeholder so the package builds while the target is written.
enum NFQueuePlaceholder {}
