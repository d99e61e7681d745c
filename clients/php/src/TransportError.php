<?php
/**
 * The errors of a failed exchange; every HTTP status is an answer, never one of these.
 *
 *     \RuntimeException
 *      └── TransportError       any failed exchange (catch this one to catch them all)
 *           ├── ConnectError    no connection to any entry, or lost before any answer
 *           ├── Timeout         no answer within the client's own timeout
 *           └── ResponseError   an answer that is not HTTP, cut short, or does not decode
 *
 * A local misuse (a bad URL, method, header, option or body) is not a transport error: it
 * raises \InvalidArgumentException before anything is sent.
 */

declare(strict_types=1);

namespace Xio;

class TransportError extends \RuntimeException
{
}
