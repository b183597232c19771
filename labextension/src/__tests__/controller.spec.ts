import { ClarionApi } from '../api';
import { ClarionController } from '../controller';
import { EventType, RunStatus, WorkflowDocument } from '../protocol';
import { V2_RUN_WORKFLOW } from '../runtitle';
import { event, runDoc } from './builders';
import { FakeServer } from './fake';

const IMPORTED = '0000018f3351e8a3d1e5c0ffee1234';
const TOUR = { id: 'tour', name: 'Tour', steps: [] } as unknown as WorkflowDocument;
const V2 = { id: V2_RUN_WORKFLOW, name: 'Clarion v2 agent run (imported)', steps: [] } as unknown as WorkflowDocument;

const until = async (condition: () => boolean): Promise<void> => {
  for (let i = 0; i < 100 && !condition(); i++) {
    await new Promise(resolve => setTimeout(resolve, 0));
  }
  expect(condition()).toBe(true);
};

describe('ClarionController', () => {
  it('reads the workflows again when a run of one it does not know appears, once', async () => {
    const server = new FakeServer();
    let saved = [TOUR];
    const run = runDoc(IMPORTED, { workflow_id: V2_RUN_WORKFLOW, status: RunStatus.succeeded });
    server.on('GET', /\/api\/v3\/workflows$/, () => ({ json: { workflows: saved } }));
    server.on('GET', /\/api\/v3\/runs$/, () => ({ json: { runs: [], next_cursor: null } }));
    server.on('GET', /\/runs\/[0-9a-f]+\/events$/, () => ({ json: { events: [] } }));
    server.on('GET', /\/runs\/[0-9a-f]+$/, () => ({ json: run }));
    const controller = new ClarionController(new ClarionApi(server.settings()));
    await Promise.all([controller.reloadWorkflows(), controller.runs.reload()]);
    const reads = (): number => server.requests.filter(r => new URL(r.url).pathname.endsWith('/api/v3/workflows')).length;
    expect(reads()).toBe(1);

    saved = [TOUR, V2]; // what an import of v2 runs saves before it announces them
    controller.runs.apply(event(IMPORTED, 1, EventType.run_started, null, { imported_from: 'clarion-v2' }));
    await until(() => controller.workflows?.some(w => w.id === V2_RUN_WORKFLOW) ?? false);
    expect(controller.runs.runs.map(r => r.run_id)).toEqual([IMPORTED]);
    expect(reads()).toBe(2);

    saved = [TOUR]; // deleted since: its runs stay, and do not read the list again and again
    await controller.reloadWorkflows();
    controller.runs.apply(event(IMPORTED, 2, EventType.workflow_succeeded));
    await controller.runs.reload();
    expect(reads()).toBe(3);
  });
});
