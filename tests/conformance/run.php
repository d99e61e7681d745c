<?php
/**
 * The PHP client's conformance runner: `php run.php PLAN.json` prints `{"results": [...]}`.
 *
 * It follows the runner contract of tests/test_conformance.py: make each case's call in
 * order with Xio\Client and report what came back, never judge (check.py judges). The plan
 * is read with JSON objects as \stdClass, so that a case's `data` keeps {} apart from [].
 */

declare(strict_types=1);

require __DIR__ . '/../../clients/php/autoload.php';

use Xio\Bytes;
use Xio\Client;
use Xio\ConnectError;
use Xio\ResponseError;
use Xio\Timeout;
use Xio\TransportError;

const OUT = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR;

function data_of(mixed $data): mixed
{
    if ($data instanceof stdClass && isset($data->{'$bytes'})) {
        return new Bytes(base64_decode($data->{'$bytes'}, true));
    }
    if ($data instanceof stdClass && isset($data->{'$repeat'})) {
        return str_repeat($data->{'$repeat'}, $data->count);
    }
    return $data;
}

/** Return a case's query or headers as the client takes them: an array (or a string). */
function array_of(mixed $value): array|string|null
{
    return $value instanceof stdClass ? json_decode(json_encode($value), true) : $value;
}

function error_name(TransportError $exc): string
{
    return match (true) {
        $exc instanceof ConnectError => 'ConnectError',
        $exc instanceof Timeout => 'Timeout',
        $exc instanceof ResponseError => 'ResponseError',
        default => 'TransportError',
    };
}

function run_case(stdClass $entries, stdClass $case): array
{
    $entry = $case->entry ?? 'a';
    $url = is_array($entry) ? array_map(fn ($name) => $entries->$name, $entry) : $entries->$entry;
    $client = new Client($url, isset($case->timeout) ? ['timeout' => $case->timeout] : []);
    $path = $case->path ?? '';
    $options = [];
    foreach (['query', 'headers'] as $name) {
        if (isset($case->$name)) {
            $options[$name] = array_of($case->$name);
        }
    }
    $data = property_exists($case, 'data') ? data_of($case->data) : null;
    try {
        $response = match ($case->call) {
            'get' => $client->get($path, [], $options),
            'about' => $client->about($path),
            'request' => $client->request($case->method, $path, ['data' => $data] + $options),
            'post', 'put', 'patch', 'delete' => $client->{$case->call}($path, $data, $options),
        };
    } catch (TransportError $exc) {
        return ['id' => $case->id, 'error' => error_name($exc), 'message' => $exc->getMessage()];
    } finally {
        $client->close();
    }
    $headers = [];
    foreach ($response->headers as $name => $values) {
        foreach ($values as $value) {
            $headers[] = [$name, $value];
        }
    }
    $content = $response->content;
    return [
        'id' => $case->id,
        'status' => $response->status,
        'contentType' => $response->contentType,
        'headers' => $headers,
        'content' => $content instanceof Bytes ? ['$bytes' => base64_encode($content->bytes)] : $content,
    ];
}

if ($argc !== 2) {
    fwrite(STDERR, "usage: php run.php PLAN.json\n");
    exit(2);
}
$plan = json_decode(file_get_contents($argv[1]), false, 512, JSON_THROW_ON_ERROR);
$results = [];
foreach ($plan->cases as $case) {
    try {
        $results[] = run_case($plan->entries, $case);
    } catch (Throwable $exc) {  // a case this runner or the client cannot make: said, not hidden
        $results[] = ['id' => $case->id, 'error' => get_class($exc), 'message' => $exc->getMessage()];
    }
}
echo json_encode(['results' => $results], OUT), "\n";
