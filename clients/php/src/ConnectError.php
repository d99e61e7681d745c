<?php

declare(strict_types=1);

namespace Xio;

/**
 * No connection could be made to any entry, or the connection was lost before any answer.
 *
 * `$nothingSent` tells the two apart: true when no byte of the request left this process
 * (refused, no such host, unreachable, connect timeout, TLS refused), so that another entry
 * may take the request without it ever arriving twice.
 */
class ConnectError extends TransportError
{
    public function __construct(
        string $message,
        public readonly bool $nothingSent = false,
        ?\Throwable $previous = null,
    ) {
        parent::__construct($message, 0, $previous);
    }
}
